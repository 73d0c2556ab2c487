"""Two pages in headless Chromium, on two nodes of a cluster, with the same Id."""

from __future__ import annotations

import time
from typing import Any

from support import MS, TIMEOUT, RedisProcess, need_chromium
from test_browser import FAST_RETRY, status

need_chromium()

from playwright.sync_api import expect  # noqa: E402


def test_takeover_across_nodes(
    start_server: Any,
    redis_server: RedisProcess,
    new_page: Any,
) -> None:
    """The older page, on node A, shows the takeover by a page on node B and stays closed."""
    args = ("--interval=0.05", f"--redis={redis_server.url}", "--redis_interval=0.05")
    a, b = start_server(*args), start_server(*args)
    deadline = time.monotonic() + 5 * TIMEOUT
    while len((a.stats()["cluster"] or {}).get("nodes", [])) < 2:
        assert time.monotonic() < deadline, "the nodes did not see each other"
        time.sleep(10 * MS)
    first, second = new_page(), new_page()
    first.goto(f"{a.url}/?Id=shared&{FAST_RETRY}")
    expect(status(first)).to_have_text("Connected")

    second.goto(f"{b.url}/?Id=shared&{FAST_RETRY}")
    expect(status(second)).to_have_text("Connected")
    expect(status(first)).to_have_text(
        "Closed: 4000 Replaced by a newer connection with the same Id · not reconnecting"
    )
    first.wait_for_timeout(300)
    expect(status(first)).to_contain_text("not reconnecting")
    expect(status(second)).to_have_text("Connected")
    assert (a.stats()["clients"], b.stats()["clients"]) == (0, 1)
