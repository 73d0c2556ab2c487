"""The page in a real browser: headless Chromium, driven by Playwright, against ``app.py``.

Every test fails on a console error or an uncaught exception in the page, except those it
names as expected (a refused WebSocket handshake while the server is down).
"""

from __future__ import annotations

import datetime
import re
import signal
from urllib.parse import quote

from support import need_chromium

need_chromium()

from playwright.sync_api import Page, expect  # noqa: E402

# str(datetime.datetime.now()): the fraction is left out when it is zero.
PUSHED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?$")
HANDSHAKE_FAILED = (
    r"^console: WebSocket connection to 'ws://127\.0\.0\.1:\d+/websocket\?Id=.*' failed"
)
FAST_RETRY = "backoff=0.05&backoffMax=0.05"


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
    """After a SIGTERM the page shows 1001, retries, and ticks again from a new server."""
    server = start_server("--interval=0.05")
    page = new_page()
    page.goto(server.url + "/?Id=restart&backoff=0.05&backoffMax=0.2")
    expect(status(page)).to_have_text("Connected")
    expect(page.locator("#clock-raw")).to_have_text(PUSHED)
    page.evaluate("window.sameDocument = true")

    console.expect(HANDSHAKE_FAILED)  # while nothing listens on the port
    server.stop(signal.SIGTERM)
    expect(page.locator("#log")).to_contain_text("Closed: 1001 Server shutting down")
    expect(status(page)).to_contain_text("reconnecting in")
    last = page.locator("#clock-raw").text_content()

    restarted = start_server("--interval=0.05", port=server.port)
    expect(status(page)).to_have_text("Connected")
    expect(page.locator("#clock-raw")).not_to_have_text(last)
    expect(page.locator("#clock-raw")).to_have_text(PUSHED)
    restarted.wait_for_log(r"Client 'restart' connected")
    assert page.evaluate("window.sameDocument") is True


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


def test_takeover_stays_closed(start_server, new_page):
    """A second page with the same Id closes the first with 4000, which does not reconnect."""
    server = start_server("--interval=0.05")
    first, second = new_page(), new_page()
    first.goto(f"{server.url}/?Id=shared&{FAST_RETRY}")
    expect(status(first)).to_have_text("Connected")

    second.goto(f"{server.url}/?Id=shared&{FAST_RETRY}")
    expect(status(second)).to_have_text("Connected")
    expect(status(first)).to_have_text(
        "Closed: 4000 Replaced by a newer connection with the same Id · not reconnecting"
    )
    first.wait_for_timeout(300)
    expect(status(first)).to_contain_text("not reconnecting")
    expect(status(second)).to_have_text("Connected")
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
    """A handshake the server refuses (an Id too long) shows 1006 and a retry after 0.5-1 s."""
    server = start_server("--interval=0.05")
    page = new_page()
    console.expect(HANDSHAKE_FAILED)
    page.goto(f"{server.url}/?Id={'x' * 65}")
    expect(status(page)).to_have_text(
        re.compile(r"Closed: 1006 could not connect \(refused or unreachable\) · reconnecting in")
    )
    # The defaults: the first retry waits between half and all of one second.
    assert 500 <= int(status(page).get_attribute("data-retry-ms")) <= 1000
    assert server.stats()["refused"] == {"bad_id": 1}


def test_backoff(start_server, new_page, console):
    """Retry delays double up to the cap, each jittered within its upper half, then reset."""
    server = start_server("--interval=0.05")
    page = new_page()
    page.goto(server.url + "/?Id=backoff&backoff=0.05&backoffMax=0.4")
    expect(page.locator("#clock-raw")).to_have_text(PUSHED)

    console.expect(HANDSHAKE_FAILED)
    server.stop(signal.SIGTERM)
    delays = retry_delays(page, 6)[:6]
    for delay, step in zip(delays, [50, 100, 200, 400, 400, 400]):
        assert step / 2 <= delay <= step, delays
    assert len(set(delays[3:])) > 1  # jittered at the cap, not a fixed schedule

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
    assert "Closed: 1001 Server shutting down" in text
    assert "(attempt 1)" in text
    assert 25 <= delay <= 50, text


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
    server = start_server("--interval=0.05")
    page = new_page(viewport={"width": 360, "height": 740}, color_scheme="dark")
    page.goto(server.url + "/?Id=phone")
    expect(page.locator("#clock-time")).to_have_text(re.compile(r"^\d\d:\d\d:\d\d$"))
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
