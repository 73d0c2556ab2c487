"""The page in a real browser: headless Chromium, driven by Playwright, against ``app.py``.

Every test fails on a console error or an uncaught exception in the page, except those it
names as expected (a refused WebSocket handshake while the server is down).
"""

from __future__ import annotations

import datetime
import re
import signal
import time
import zoneinfo
from typing import Any
from urllib.parse import quote

import pytest
from chromium import need_chromium
from support import TIMEOUT

need_chromium()

from playwright.sync_api import Page, expect  # noqa: E402

# str(datetime.datetime.now()): the fraction is left out when it is zero.
PUSHED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?$")
HANDSHAKE_FAILED = (
    r"^console: WebSocket connection to 'ws://127\.0\.0\.1:\d+/websocket\?Id=.*' failed"
)
FAST_RETRY = "backoff=0.05&backoffMax=0.05"
IN_STEP = "Your clock is in step with the server (within 0.1 s)"


def status(page: Page):
    return page.get_by_role("status")


def retry_delays(page: Page, count: int) -> list[int]:
    """Wait for ``count`` reconnect delays in the page's log and return them, oldest first."""
    handle = page.wait_for_function(
        """(count) => {
            const items = [...document.querySelectorAll("#log li[data-retry-ms]")].reverse();
            return items.length >= count && items.map((item) => Number(item.dataset.retryMs));
        }""",
        arg=count,
        polling=10,
    )
    return handle.json_value()


def test_clock_ticks(start_server, new_page):
    """The clock shows each pushed time: HH:MM:SS big, the date below, the raw text intact."""
    server = start_server("--interval=0.05")
    page = new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(server.url + "/?Id=clock")
    expect(status(page)).to_have_text("Connected")
    raw = page.locator("#clock-raw")
    expect(raw).to_have_text(PUSHED)
    first = raw.text_content()
    expect(raw).not_to_have_text(first)

    # Read the three parts in one go, from the same tick.
    pushed, hms, date = page.evaluate(
        "() => ['#clock-raw', '#clock-time', '#clock-date']"
        ".map((s) => document.querySelector(s).textContent)"
    )
    assert PUSHED.match(pushed)
    assert hms == pushed[11:19]
    server_time = datetime.datetime.fromisoformat(pushed)
    assert str(server_time.year) in date
    assert abs(server_time - datetime.datetime.now()) < datetime.timedelta(seconds=5)
    assert server.stats()["clients"] == 1
    # Nothing comes from anywhere but this server, and static files carry a cache buster.
    assert requests
    assert all(url.startswith(server.url + "/") for url in requests), requests
    assert any(re.search(r"/static/clock\.js\?v=\w+", url) for url in requests), requests


def test_placeholder(start_server, new_page):
    """Before the first tick the clock shows a placeholder; a time without a fraction is shown."""
    server = start_server("--interval=5")
    page = new_page()
    sockets = []
    # A stand-in for the server's socket, so the first tick comes exactly when the test says.
    page.route_web_socket(re.compile(r"/websocket\?"), lambda ws: sockets.append(ws))
    page.goto(server.url + "/?Id=mock")
    expect(status(page)).to_have_text("Connected")
    expect(page.locator("#clock-time")).to_have_text("--:--:--")
    expect(page.locator("#clock-date")).to_have_text("Waiting for the first tick…")
    expect(page.locator("#interval")).to_have_text("5 s")
    expect(page.locator("#clock")).to_have_attribute("aria-live", "off")
    expect(page.locator("#clock")).to_have_class(re.compile(r"\bstale\b"))

    sockets[0].send("2026-11-24 21:36:01")
    expect(page.locator("#clock-time")).to_have_text("21:36:01")
    expect(page.locator("#clock-date")).to_contain_text("2026")
    expect(page.locator("#clock-raw")).to_have_text("2026-11-24 21:36:01")
    expect(page.locator("#clock")).not_to_have_class(re.compile(r"\bstale\b"))


def test_typed_message(start_server, new_page):
    """Enter and the Send button both send the typed text, which the log shows as text."""
    server = start_server("--interval=0.05")
    page = new_page()
    page.goto(server.url + "/?Id=sender")
    expect(status(page)).to_have_text("Connected")
    box = page.get_by_label("Message to send")

    box.fill("hello <b>there</b>")
    box.press("Enter")
    server.wait_for_log(r"Message from 'sender' \(18 chars\): 'hello <b>there</b>'")
    expect(box).to_have_value("")

    box.fill("ünïcode ✓")
    page.get_by_role("button", name="Send").click()
    server.wait_for_log(r"Message from 'sender' \(9 chars\): 'ünïcode ✓'")
    log = page.locator("#log li")
    expect(log.first).to_contain_text("Sent: ünïcode ✓")
    expect(log.nth(1)).to_contain_text("Sent: hello <b>there</b>")
    expect(page.locator("#log b")).to_have_count(0)


def test_reconnects_after_restart(start_server, new_page, console):
    """After Ctrl-C the page shows 1001, retries, and ticks again from a new server."""
    server = start_server("--interval=0.05")
    page = new_page()
    page.goto(server.url + "/?Id=restart&backoff=0.05&backoffMax=0.2&restartWindow=0.1")
    expect(status(page)).to_have_text("Connected")
    expect(page.locator("#clock-raw")).to_have_text(PUSHED)
    page.evaluate("window.sameDocument = true")

    console.expect(HANDSHAKE_FAILED)  # while nothing listens on the port
    server.stop(signal.SIGINT)
    expect(page.locator("#log")).to_contain_text("Closed: 1001 Server shutting down")
    expect(status(page)).to_contain_text("reconnecting in")
    last = page.locator("#clock-raw").text_content()

    restarted = start_server("--interval=0.05", port=server.port)
    expect(status(page)).to_have_text("Connected")
    expect(page.locator("#clock-raw")).not_to_have_text(last)
    expect(page.locator("#clock-raw")).to_have_text(PUSHED)
    restarted.wait_for_log(r"Client 'restart' connected")
    assert page.evaluate("window.sameDocument") is True


def test_service_restart(start_server, new_page):
    """After a SIGTERM the page says the server restarts and waits a random moment of the
    restart window (here up to 10 min), not the backoff's step; then it ticks again."""
    server = start_server("--interval=0.05", "--drain_seconds=0.2")
    page = new_page()
    page.goto(server.url + "/?Id=rolling&backoff=0.05&backoffMax=0.1&restartWindow=600")
    expect(page.locator("#clock-raw")).to_have_text(PUSHED)

    assert server.stop(signal.SIGTERM) == 0
    expect(status(page)).to_have_text(re.compile(r"Server restarting, reconnecting in [\d.]+ s"))
    expect(page.locator("#log li").first).to_contain_text("Closed: 1012 Service restart")
    # Below the backoff's 50 ms by chance once in 12,000 runs.
    assert int(status(page).get_attribute("data-retry-ms")) > 50
    last = page.locator("#clock-raw").text_content()

    restarted = start_server("--interval=0.05", port=server.port)
    page.evaluate("window.dispatchEvent(new Event('online'))")  # no need to sit out the wait
    expect(status(page)).to_have_text("Connected")
    expect(page.locator("#clock-raw")).not_to_have_text(last)
    restarted.wait_for_log(r"Client 'rolling' connected")


def test_close_button(start_server, new_page):
    """Close shows its code and reason and stays closed; Connect comes back."""
    server = start_server("--interval=0.05")
    page = new_page()
    page.goto(f"{server.url}/?Id=closer&{FAST_RETRY}")
    expect(status(page)).to_have_text("Connected")

    page.get_by_role("button", name="Close").click()
    expect(status(page)).to_have_text("Closed: 1000 Closed by the user")
    server.wait_for_log(r"Client 'closer' left \(code 1000, reason 'Closed by the user'")
    expect(page.get_by_role("button", name="Send")).to_be_disabled()
    expect(page.get_by_role("button", name="Connect")).to_be_focused()
    # Several retry delays pass without a new connection.
    page.wait_for_timeout(300)
    expect(status(page)).to_have_text("Closed: 1000 Closed by the user")
    assert server.log.count("Client 'closer' connected") == 1

    page.get_by_role("button", name="Connect").click()
    expect(status(page)).to_have_text("Connected")
    expect(page.get_by_role("button", name="Close")).to_be_focused()
    server.wait_for_log(r"(?s)(Client 'closer' connected.*){2}")


def take_over(new_page, first_url: str, second_url: str) -> None:
    """Open the Id "shared" at ``first_url``, then at ``second_url``; the first page shows the
    takeover and stays closed while the second stays connected."""
    first, second = new_page(), new_page()
    first.goto(f"{first_url}/?Id=shared&{FAST_RETRY}")
    expect(status(first)).to_have_text("Connected")

    second.goto(f"{second_url}/?Id=shared&{FAST_RETRY}")
    expect(status(second)).to_have_text("Connected")
    expect(status(first)).to_have_text(
        "Closed: 4000 Replaced by a newer connection with the same Id · not reconnecting"
    )
    first.wait_for_timeout(300)
    expect(status(first)).to_contain_text("not reconnecting")
    expect(status(second)).to_have_text("Connected")


def test_takeover_stays_closed(start_server, new_page):
    """A second page with the same Id closes the first with 4000, which does not reconnect."""
    server = start_server("--interval=0.05")
    take_over(new_page, server.url, server.url)
    server.wait_for_log(r"(?s)(Client 'shared' connected.*){2}")
    assert server.log.count("Client 'shared' connected") == 2
    assert server.stats()["clients"] == 1


def test_html_id_shown_as_text(start_server, new_page):
    """An Id full of HTML is shown literally, creates no element and runs no script."""
    server = start_server("--interval=0.05")
    page = new_page()
    evil = '<img src=x onerror="window.pwned=1"><b>x</b>'
    page.goto(f"{server.url}/?Id={quote(evil)}")
    expect(status(page)).to_have_text("Connected")
    expect(page.locator("#client-id")).to_have_text(evil)
    server.wait_for_log(re.escape(f"Client {evil!r} connected"))
    expect(page.locator("body img, body b")).to_have_count(0)
    assert page.evaluate("window.pwned") is None


def test_generated_id_kept(start_server, new_page):
    """Without ?Id= the page makes one up, keeps it across a reload, and another tab differs."""
    server = start_server("--interval=0.05")
    page = new_page()
    page.goto(server.url + "/")
    shown = page.locator("#client-id")
    expect(shown).to_have_text(re.compile(r"^tab-[0-9a-f]{8}$"))
    client_id = shown.text_content()
    server.wait_for_log(f"Client '{client_id}' connected")

    page.reload()
    expect(shown).to_have_text(client_id)
    expect(status(page)).to_have_text("Connected")

    other = new_page()
    other.goto(server.url + "/")
    expect(other.locator("#client-id")).to_have_text(re.compile(r"^tab-[0-9a-f]{8}$"))
    assert other.locator("#client-id").text_content() != client_id


def test_refused_shows_1006(start_server, new_page, console):
    """A handshake the server refuses (an Id too long) shows 1006 and a retry within 1 s."""
    server = start_server("--interval=0.05")
    page = new_page()
    console.expect(HANDSHAKE_FAILED)
    page.goto(f"{server.url}/?Id={'x' * 65}")
    expect(status(page)).to_have_text(
        re.compile(r"Closed: 1006 could not connect \(refused or unreachable\) · reconnecting in")
    )
    # The defaults: the first retry waits up to one second.
    assert 0 <= int(status(page).get_attribute("data-retry-ms")) <= 1000
    assert server.stats()["refused"] == {"bad_id": 1}


def test_backoff(start_server, new_page, console):
    """Retry delays double up to the cap, each anywhere below its step (full jitter), then reset;
    the first after a restart falls within the restart window."""
    server = start_server("--interval=0.05")
    page = new_page()
    page.goto(server.url + "/?Id=backoff&backoff=0.05&backoffMax=0.4&restartWindow=0.05")
    expect(page.locator("#clock-raw")).to_have_text(PUSHED)

    console.expect(HANDSHAKE_FAILED)
    server.stop(signal.SIGINT)
    steps = [50, 100, 200, 400, 400, 400, 400, 400, 400, 400, 400]  # the first: the window
    delays = retry_delays(page, len(steps))[: len(steps)]
    assert all(0 <= delay <= step for delay, step in zip(delays, steps)), delays
    # Anywhere below the step, not only in its upper half (2 ** -10 to fail by chance).
    assert any(delay < step / 2 for delay, step in zip(delays[1:], steps[1:])), delays

    # A connection that delivers a tick starts the schedule afresh.
    restarted = start_server("--interval=0.05", port=server.port)
    expect(status(page)).to_have_text("Connected")
    expect(page.locator("#clock")).not_to_have_class(re.compile(r"\bstale\b"))
    restarted.stop(signal.SIGTERM)
    text, delay = page.wait_for_function(
        """() => {
            const items = [...document.querySelectorAll("#log li")];  // newest first
            const connected = items.findIndex((item) => item.textContent.includes("Connected"));
            const closed = items.slice(0, connected).findLast((item) => item.dataset.retryMs);
            return closed && [closed.textContent, Number(closed.dataset.retryMs)];
        }""",
        polling=10,
    ).json_value()
    assert "Closed: 1012 Service restart" in text
    assert "(attempt 1)" in text
    assert 0 <= delay <= 50, text


def test_silent_link_dead(start_server, new_page):
    """A connection that stops delivering ticks is dropped and replaced by a new one."""
    server = start_server("--interval=0.05")
    page = new_page()
    sockets = []
    page.route_web_socket(re.compile(r"/websocket\?"), lambda ws: sockets.append(ws))
    page.goto(f"{server.url}/?Id=silent&{FAST_RETRY}")
    expect(status(page)).to_have_text("Connected")
    sockets[0].send("2026-11-24 21:36:01.000292")
    expect(page.locator("#clock-time")).to_have_text("21:36:01")

    # No more ticks: after max(3 intervals, 1 s) the page gives up on this socket.
    expect(page.locator("#log")).to_contain_text(re.compile(r"No tick for 1(\.\d)? s"))
    expect(status(page)).to_have_text("Connected")
    assert len(sockets) == 2


def test_phone_dark_mode(start_server, new_page):
    """On a narrow dark screen nothing scrolls sideways, and the palette is the dark one."""
    server = start_server("--interval=0.05", env={"TZ": "America/Argentina/Buenos_Aires"})
    page = new_page(viewport={"width": 360, "height": 740}, color_scheme="dark")
    page.goto(server.url + "/?Id=phone")
    expect(page.locator("#clock-time")).to_have_text(re.compile(r"^\d\d:\d\d:\d\d$"))
    # The longest lines are there: a long zone name, and the clock offset.
    expect(page.locator("#clock-zone")).to_contain_text("America/Argentina/Buenos_Aires")
    expect(page.locator("#skew")).to_have_text(re.compile(r"^Your clock is "))
    layout = page.evaluate(
        """() => ({
            overflow: document.documentElement.scrollWidth - innerWidth,
            clockPx: parseFloat(getComputedStyle(document.getElementById('clock-time')).fontSize),
            background: getComputedStyle(document.body).backgroundColor,
        })"""
    )
    assert layout["overflow"] <= 0, layout
    assert layout["clockPx"] >= 48, layout
    red, green, blue = map(int, re.findall(r"\d+", layout["background"])[:3])
    assert red + green + blue < 150, layout


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def shown(page: Page) -> dict[str, str]:
    """The pushed text, the big clock and the zone line, read together from the same tick."""
    return page.evaluate(
        """() => Object.fromEntries(['clock-raw', 'clock-time', 'clock-zone']
            .map((id) => [id.slice(6), document.getElementById(id).textContent]))"""
    )


def test_server_zone(start_server, new_page):
    """A server in Shanghai, a reader in New York: the page says +08:00, and the clocks agree."""
    server = start_server("--interval=0.05", env={"TZ": "Asia/Shanghai"})
    page = new_page(timezone_id="America/New_York")
    page.goto(server.url + "/?Id=shanghai")
    zone_line = page.locator("#clock-zone")
    expect(zone_line).to_have_text("Server's zone: UTC+08:00 · Asia/Shanghai (CST)")
    # A reader in another zone with a right clock is in step: zones are not clock errors.
    expect(page.locator("#skew")).to_have_text(IN_STEP)

    now = shown(page)
    assert PUSHED.match(now["raw"]), now  # the same text as ever on the wire
    assert now["time"] == now["raw"][11:19]
    pushed = datetime.datetime.fromisoformat(now["raw"]).replace(
        tzinfo=datetime.timezone(datetime.timedelta(hours=8))
    )
    assert abs(pushed - utc_now()) < datetime.timedelta(seconds=5), now

    # Switched to the reader's zone, the big clock shows that same moment in New York.
    page.get_by_label("Your zone").check()
    new_york = zoneinfo.ZoneInfo("America/New_York")
    expect(zone_line).to_have_text(re.compile(r"^Your zone: UTC-0[45]:00 · America/New_York$"))
    now = shown(page)
    pushed = datetime.datetime.fromisoformat(now["raw"]).replace(tzinfo=pushed.tzinfo)
    there = pushed.astimezone(new_york)
    assert now["time"] == there.strftime("%H:%M:%S"), now
    assert there.strftime("%z")[:3] in now["zone"], now

    page.get_by_label("Server's zone").check()
    expect(zone_line).to_contain_text("UTC+08:00")
    now = shown(page)
    assert now["time"] == now["raw"][11:19], now


@pytest.mark.parametrize("shift, side", [(5, "ahead of"), (-5, "behind")])
def test_reader_clock_off(start_server, new_page, shift, side):
    """A browser whose clock is 5 s fast (or slow) is told so, to within a few tenths."""
    server = start_server("--interval=0.05")
    page = new_page()
    page.clock.install(time=time.time() + shift)
    page.goto(server.url + "/?Id=skewed")
    skew = page.locator("#skew")
    expect(skew).to_have_text(re.compile(rf"^Your clock is \d\.\d s {side} the server$"))
    # The fake clock starts from that time when the page loads, a moment after install(), and
    # runs on in real time: measure how far off it really is.
    before = time.time()
    browser = page.evaluate("Date.now()") / 1000
    after = time.time()
    assert abs(browser - after - shift) < 1
    # The figure adds the ticks' travel time, a few ms here, to the real difference.
    figure = int(skew.get_attribute("data-ms")) / 1000
    assert browser - after - 0.01 <= figure <= browser - before + 0.3, (figure, browser - after)
    # It changes with every tick or two, so screen readers are not told each time.
    live = page.evaluate("document.getElementById('skew').closest('[aria-live], [role]').id")
    assert live == "clock"
    # The page's timers still fire under the installed clock (the link watchdog needs them).
    page.evaluate("setTimeout(() => { window.timerFired = true }, 20)")
    page.wait_for_function("() => window.timerFired", timeout=TIMEOUT * 1000)


def wall_text(at: datetime.datetime) -> str:
    """What str(datetime.datetime.now()) prints on a server whose local time is ``at``."""
    return str(at.replace(tzinfo=None))


def mock_ticks(page: Page) -> list[Any]:
    """Route the page's WebSocket to the test, which then sends each tick itself."""
    sockets: list[Any] = []
    page.route_web_socket(re.compile(r"/websocket\?"), lambda ws: sockets.append(ws))
    return sockets


def send_tick(page: Page, socket: Any, text: str) -> int:
    """Send one tick, wait until the page has shown it, and return the clock offset in ms."""
    socket.send(text)
    expect(page.locator("#clock-raw")).to_have_text(text)
    return int(page.locator("#skew").get_attribute("data-ms") or "0")


def test_late_tick_smoothed(start_server, new_page):
    """One tick that arrives 3 s late leaves the offset alone; a run of them moves it."""
    server = start_server("--interval=5", env={"TZ": "UTC"})
    page = new_page()
    sockets = mock_ticks(page)
    page.goto(server.url + "/?Id=late")
    expect(page.locator("#clock-zone")).to_contain_text("UTC+00:00")
    for _ in range(9):
        on_time = send_tick(page, sockets[0], wall_text(utc_now()))
    expect(page.locator("#skew")).to_have_text(re.compile("^Your clock is "))

    # The figures are compared with the on-time one, so the test's own delays cancel out.
    late = datetime.timedelta(seconds=3)
    assert abs(send_tick(page, sockets[0], wall_text(utc_now() - late)) - on_time) < 100
    for _ in range(4):
        figure = send_tick(page, sockets[0], wall_text(utc_now() - late))
    assert 2900 < figure - on_time < 3100
    expect(page.locator("#skew")).to_have_text(
        re.compile(r"^Your clock is \d\.\d s ahead of the server$")
    )


def test_zone_change(start_server, new_page):
    """When the server's clocks go back an hour, the page reads the new zone without a reload."""
    server = start_server("--interval=5")
    page = new_page()
    sockets = mock_ticks(page)
    answers = [{"utc_offset_seconds": 3600, "abbreviation": "BST", "zone": "Europe/London"}]
    asked = []
    page.on("request", lambda request: asked.append(request.url))
    page.route(re.compile(r"/clock$"), lambda route: route.fulfill(json=answers[-1]))
    page.goto(server.url + "/?Id=autumn")
    page.evaluate("window.sameDocument = true")
    zone_line, skew = page.locator("#clock-zone"), page.locator("#skew")
    expect(zone_line).to_have_text("Server's zone: UTC+01:00 · Europe/London (BST)")
    for _ in range(5):
        before = send_tick(page, sockets[0], wall_text(utc_now() + datetime.timedelta(hours=1)))
    expect(skew).to_have_text(re.compile("^Your clock is "))
    # Record every figure the page works out from now on.
    page.evaluate(
        """() => {
            const skew = document.getElementById("skew");
            window.figures = [];
            new MutationObserver(() => window.figures.push(Number(skew.dataset.ms)))
                .observe(skew, { attributes: true, attributeFilter: ["data-ms"] });
        }"""
    )

    answers.append({"utc_offset_seconds": 0, "abbreviation": "GMT", "zone": "Europe/London"})
    for _ in range(5):
        send_tick(page, sockets[0], wall_text(utc_now()))
    expect(zone_line).to_have_text("Server's zone: UTC+00:00 · Europe/London (GMT)")
    # The figure never jumped by the hour, though for a moment ticks and zone disagreed.
    figures = page.evaluate("window.figures")
    assert figures and all(abs(figure - before) < 100 for figure in figures), (before, figures)
    assert [url for url in asked if url.endswith("/clock")] == [server.url + "/clock"] * 2
    assert page.evaluate("window.sameDocument") is True


@pytest.mark.parametrize(
    "answer",
    [
        {"status": 404, "body": "Not Found"},
        {"status": 200, "body": "not json", "content_type": "application/json"},
        {"status": 200, "json": {"utc_offset_seconds": "+08:00"}},
        {"status": 200, "json": ["utc_offset_seconds", 28800]},
    ],
)
def test_zone_unknown(start_server, new_page, console, answer):
    """Without a usable /clock the page says the zone is unknown and compares no clocks."""
    server = start_server("--interval=0.05")
    page = new_page()
    console.expect(r"^console: Failed to load resource: the server responded with a status of 404")
    page.route(re.compile(r"/clock$"), lambda route: route.fulfill(**answer))
    page.goto(server.url + "/?Id=nozone")
    expect(page.locator("#clock-raw")).to_have_text(PUSHED)
    expect(page.locator("#clock-zone")).to_have_text(
        "The server did not say which time zone its time is in"
    )
    expect(page.locator("#skew")).to_have_text(
        "Without the server's zone, your clock cannot be compared with it"
    )
    # The clock goes on in the server's zone, whichever zone the reader asks for.
    page.get_by_label("Your zone").check()
    now = shown(page)
    expect(page.locator("#clock-raw")).not_to_have_text(now["raw"])
    now = shown(page)
    assert now["time"] == now["raw"][11:19], now
