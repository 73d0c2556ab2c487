"""Take a screenshot of the page: the real server, its page in headless Chromium, after a tick.

    python docs/screenshot.py                      # 1280x800, light, to a new file here
    python docs/screenshot.py --output docs/screenshot.png    # replace the README's picture
    python docs/screenshot.py --width 390 --height 844 --color-scheme dark -o /tmp/phone.png

Without ``--output`` it writes ``screenshot.png`` in the current directory, or
``screenshot-2.png`` and so on if that is taken, and never replaces a file; it prints the
path it wrote. ``--output`` replaces the file it names.

Needs Chromium (``apt-get install chromium``) and the ``playwright`` package; Playwright's own
browser download is not used.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support import CHROMIUM_ARGS, ServerProcess  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--color-scheme", choices=["light", "dark"], default="light")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument(
        "-o", "--output", type=Path, help="the file to write, replaced if it exists"
    )
    args = parser.parse_args()
    if args.output is not None and not args.output.parent.is_dir():
        parser.error(f"no directory {args.output.parent} to write {args.output.name} in")

    server = ServerProcess("--interval=1")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(
                viewport={"width": args.width, "height": args.height},
                color_scheme=args.color_scheme,
            )
            page.goto(f"{server.url}/?Id=projector")
            # A message in the log shows what the page is for.
            page.get_by_label("Message to send").fill("Hello from the projector")
            page.get_by_role("button", name="Send").click()
            expect(page.locator("#clock-time")).to_have_text(
                re.compile(r"^\d\d:\d\d:\d\d$"), timeout=5000
            )
            # The clock offset needs a few ticks.
            expect(page.locator("#skew")).to_have_text(re.compile(r"^Your clock is "), timeout=8000)
            # Sending scrolled the page to the button: show it from the top, all of it.
            page.evaluate("window.scrollTo(0, 0)")
            png = page.screenshot(animations="disabled", full_page=True)
            browser.close()
    finally:
        server.stop()
    if args.output is None:
        output = write_new(png)
    else:
        output = args.output
        output.write_bytes(png)
    print(f"wrote {output.resolve()}")


def write_new(data: bytes) -> Path:
    """Write ``data`` to a file in the current directory that did not exist; return its path."""
    number = 1
    while True:
        path = Path("screenshot.png" if number == 1 else f"screenshot-{number}.png")
        try:
            with path.open("xb") as file:  # "x" fails rather than replace a file
                file.write(data)
            return path
        except FileExistsError:
            number += 1


if __name__ == "__main__":
    main()
