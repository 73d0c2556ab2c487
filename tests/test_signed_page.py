"""The page with signed Ids (--cookie_secret), in headless Chromium.

The server picks each browser's Id and signs it into a cookie; every tab of one browser shares
it, so a new tab takes the Id over, while another browser gets an Id of its own.
"""

from __future__ import annotations

import re

from chromium import need_chromium

need_chromium()

from playwright.sync_api import Page, expect  # noqa: E402

SECRET = "a-test-secret-of-more-than-32-characters"
SIGNED = ("--interval=0.05", f"--cookie_secret={SECRET}")
HANDED_OUT = re.compile(r"^[\w-]{16}$")
FAST_RETRY = "backoff=0.05&backoffMax=0.05"
PUSHED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def status(page: Page):
    return page.get_by_role("status")


def shown_id(page: Page) -> str:
    expect(page.locator("#client-id")).to_have_text(HANDED_OUT)
    return page.locator("#client-id").text_content() or ""


def open_connected(page: Page, url: str) -> str:
    """Load the page at ``url``; return the Id it shows once it has connected."""
    page.goto(url)
    client_id = shown_id(page)
    expect(status(page)).to_have_text("Connected")
    return client_id


def test_signed_page_ticks(start_server, new_page):
    """The page shows the Id the server handed out, not its ?Id=, ticks, and keeps it on reload."""
    server = start_server(*SIGNED)
    page = new_page()
    client_id = open_connected(page, f"{server.url}/?Id=somebody")
    expect(page.locator("#clock-raw")).to_have_text(PUSHED)
    server.wait_for_log(f"Client '{client_id}' connected")
    assert page.evaluate("document.cookie") == ""  # HttpOnly: out of the page's scripts' reach

    page.reload()
    assert shown_id(page) == client_id
    expect(status(page)).to_have_text("Connected")
    assert server.stats()["refused"] == {}


def test_tabs_share_signed_id(start_server, new_page):
    """A second tab of the same browser takes the Id over; another browser cannot."""
    server = start_server(*SIGNED)
    first = new_page()
    client_id = open_connected(first, f"{server.url}/?{FAST_RETRY}")

    # Another browser asking for that Id by name gets an Id of its own and leaves the first be.
    stranger = new_page()
    assert open_connected(stranger, f"{server.url}/?Id={client_id}&{FAST_RETRY}") != client_id
    expect(status(first)).to_have_text("Connected")

    second = new_page(tab_of=first)
    assert open_connected(second, f"{server.url}/?{FAST_RETRY}") == client_id
    expect(status(first)).to_have_text(
        "Closed: 4000 Replaced by a newer connection with the same Id · not reconnecting"
    )
    expect(status(second)).to_have_text("Connected")
    stats = server.stats()
    assert (stats["clients"], stats["closed"], stats["refused"]) == (2, {"replaced": 1}, {})
