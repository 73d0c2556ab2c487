"""Signed Ids (--cookie_secret): the server hands out the Id, and only its signature opens it."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time
import urllib.request
from typing import Any, ClassVar

from servers import ServerTestCase
from support import ROOT, TIMEOUT
from tornado.httpclient import HTTPRequest
from tornado.testing import gen_test
from tornado.web import create_signed_value, decode_signed_value

import app

SECRET = "a-test-secret-of-more-than-32-characters"
DAY = 86400


def cookie(client_id: str, secret: str = SECRET, *, age: float = 0, name: str = "clock_id") -> str:
    """A Cookie header carrying ``client_id`` signed with ``secret``, ``age`` seconds ago."""
    signed = create_signed_value(secret, name, client_id, clock=lambda: time.time() - age)
    return f"clock_id={signed.decode()}"


def tampered(client_id: str, instead: str) -> str:
    """A valid signed cookie for ``client_id`` whose value was swapped for ``instead``."""
    fields = cookie(client_id).split("|")
    new_value = base64.b64encode(instead.encode()).decode()
    fields[4] = f"{len(new_value)}:{new_value}"
    return "|".join(fields)


MISSING = "Missing signature for the Id: load the page first"
NOT_VALID = "Signature not valid (forged or tampered)"
EXPIRED = "Signature expired: reload the page"
OTHER_ID = "Signature is for another Id"

# What a handshake for Id "alice" carries, and the reason of its 403.
BAD_SIGNATURES = {
    "no cookie": ({}, MISSING),
    "other cookies only": ({"Cookie": "other=1"}, MISSING),
    "forged with another secret": ({"Cookie": cookie("alice", "x" * 40)}, NOT_VALID),
    "the bare Id": ({"Cookie": "clock_id=alice"}, NOT_VALID),
    "made-up signature": (
        {"Cookie": 'clock_id="2|1:0|10:1700000000|8:clock_id|8:YWxpY2U=|00"'},
        NOT_VALID,
    ),
    "tampered": ({"Cookie": tampered("mallory", "alice")}, NOT_VALID),
    "signed for another cookie": ({"Cookie": cookie("alice", name="_xsrf")}, NOT_VALID),
    "expired": ({"Cookie": cookie("alice", age=31 * DAY)}, EXPIRED),
    "for another Id": ({"Cookie": cookie("bob")}, OTHER_ID),
}


class TestSignedIds(ServerTestCase):
    app_settings: ClassVar[dict[str, Any]] = {"cookie_secret": SECRET}

    async def page(self, headers: dict[str, str] | None = None) -> tuple[str, str]:
        """Load the page; return the Id it shows and the Cookie header that goes with it."""
        request = HTTPRequest(self.get_url("/?Id=mallory"), headers=headers)
        response = await self.http_client.fetch(request)
        shown = re.search(r'data-id="([^"]*)"', response.body.decode())
        assert shown is not None
        set_cookie = response.headers["Set-Cookie"]
        return shown.group(1), set_cookie.split(";")[0]

    @gen_test
    async def test_page_hands_out_signed_id(self) -> None:
        """The page gets a new Id, signed in an HttpOnly SameSite cookie; ?Id= cannot choose it."""
        client_id, set_cookie = await self.page()
        self.assertRegex(client_id, r"^[\w-]{16}$")
        name, _, value = set_cookie.partition("=")
        self.assertEqual(name, "clock_id")
        signed = decode_signed_value(SECRET, "clock_id", value.strip('"'))
        self.assertEqual(signed, client_id.encode())
        response = await self.http_client.fetch(self.get_url("/"))
        attributes = response.headers["Set-Cookie"].lower()
        self.assertIn("httponly", attributes)
        self.assertIn("samesite=strict", attributes)
        self.assertIn("path=/", attributes)

        # The same browser keeps its Id; another one, or a bad cookie, gets a new one.
        self.assertEqual((await self.page({"Cookie": set_cookie}))[0], client_id)
        self.assertNotEqual((await self.page())[0], client_id)
        self.assertNotEqual((await self.page({"Cookie": tampered("x", client_id)}))[0], client_id)

        connection = await self.connect(client_id, {"Cookie": set_cookie})
        self.assertIsNotNone(await self.read(connection))
        self.assertEqual(list(app.clients), [client_id])

    @gen_test
    async def test_bad_signatures(self) -> None:
        """A missing, forged, tampered, expired or other-Id signature gets 403 saying which."""
        outcome = {}
        for case, (headers, _) in BAD_SIGNATURES.items():
            outcome[case] = await self.refusal("alice", headers)
        expected = {case: (403, reason) for case, (_, reason) in BAD_SIGNATURES.items()}
        self.assertEqual(outcome, expected)
        self.assertEqual(app.stats.refused, {"signature": len(BAD_SIGNATURES)})
        self.assertEqual(app.clients, {})
        # Each refusal is one warning that names the Id; no cookie or secret gets into the log.
        warnings = [m for m in self.log.messages() if m.startswith("Refused Id 'alice': ")]
        self.assertEqual(len(warnings), len(BAD_SIGNATURES))
        everything = "\n".join(r.getMessage() for r in self.log.records)
        self.assertNotIn(SECRET, everything)
        self.assertNotIn("clock_id=", everything)

    @gen_test
    async def test_fresh_signature_accepted(self) -> None:
        """A signature 29 days old still opens its Id; an expired one did not (above)."""
        connection = await self.connect("alice", {"Cookie": cookie("alice", age=29 * DAY)})
        self.assertIsNotNone(await self.read(connection))

    @gen_test
    async def test_takeover_needs_signature(self) -> None:
        """Knowing an Id is not enough to take it over; its signed cookie is."""
        owner = await self.connect("alice", {"Cookie": cookie("alice")})
        ticks = self.keep_reading(owner)
        status, reason = await self.refusal("alice")
        self.assertEqual(
            (status, reason), (403, "Missing signature for the Id: load the page first")
        )
        self.assertEqual((await self.refusal("alice", {"Cookie": cookie("bob")}))[0], 403)
        seen = len(ticks)
        await self.wait_until(lambda: len(ticks) > seen)  # the owner still gets the time
        self.assertIs(app.clients["alice"]["object"].close_code, None)

        # The same signed cookie (another tab of the same browser) takes it over.
        await self.connect("alice", {"Cookie": cookie("alice")})
        await self.wait_until(lambda: owner.close_code is not None)
        self.assertEqual(owner.close_code, app.CLOSE_REPLACED)
        self.assertEqual(app.stats.closed["replaced"], 1)


class TestSecureCookie(ServerTestCase):
    app_settings: ClassVar[dict[str, Any]] = {"cookie_secret": SECRET}

    def get_httpserver_options(self) -> dict[str, Any]:
        return {"xheaders": True}  # as with --xheaders, behind a proxy

    @gen_test
    async def test_secure_behind_tls(self) -> None:
        """Behind a proxy that says the page came over https, the cookie is marked Secure."""
        for proto, secure in (("https", True), ("http", False), (None, False)):
            headers = {"X-Forwarded-Proto": proto} if proto else {}
            response = await self.http_client.fetch(self.get_url("/"), headers=headers)
            attributes = [a.strip().lower() for a in response.headers["Set-Cookie"].split(";")]
            self.assertEqual("secure" in attributes, secure, proto)


def test_proxy_header_needs_xheaders(start_server) -> None:
    """Without --xheaders, a client's own X-Forwarded-Proto changes nothing."""
    server = start_server("--interval=0.02", f"--cookie_secret={SECRET}")
    request = urllib.request.Request(server.url + "/", headers={"X-Forwarded-Proto": "https"})
    with urllib.request.urlopen(request) as response:
        attributes = [a.strip().lower() for a in response.headers["Set-Cookie"].split(";")]
    assert "secure" not in attributes
    assert server.stop() == 0


class TestClaimedIds(ServerTestCase):
    @gen_test
    async def test_without_secret(self) -> None:
        """Without --cookie_secret the page sets no cookie, and any Id is taken at its word."""
        response = await self.http_client.fetch(self.get_url("/?Id=mallory"))
        self.assertNotIn("Set-Cookie", response.headers)
        self.assertIn('data-id=""', response.body.decode())
        owner = await self.connect("alice")
        await self.connect("alice", {"Cookie": "clock_id=anything"})
        await self.wait_until(lambda: owner.close_code is not None)
        self.assertEqual(owner.close_code, app.CLOSE_REPLACED)


def test_short_secret() -> None:
    """A cookie secret shorter than 32 characters stops the start, without showing it."""
    with_short = subprocess.run(
        [sys.executable, "app.py", "--cookie_secret=too-short-a-secret"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=10 * TIMEOUT,
    )
    assert with_short.returncode != 0
    assert "at least 32 characters" in with_short.stderr
    assert "too-short-a-secret" not in with_short.stdout + with_short.stderr


def test_secret_from_environment(start_server, monkeypatch) -> None:
    """COOKIE_SECRET switches signing on; the secret is in no log, no --help and no /stats."""
    monkeypatch.setenv("COOKIE_SECRET", SECRET)
    server = start_server("--interval=0.02", "--logging=debug")
    with urllib.request.urlopen(server.url + "/") as response:
        set_cookie = response.headers["Set-Cookie"]
    assert set_cookie.startswith("clock_id=")
    stats = urllib.request.urlopen(server.url + "/stats").read().decode()
    assert server.stop() == 0
    help_text = subprocess.run(
        [sys.executable, "app.py", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "COOKIE_SECRET": SECRET},
        timeout=10 * TIMEOUT,
    )
    assert "--cookie_secret" in help_text.stdout + help_text.stderr
    for text in (server.log, stats, help_text.stdout, help_text.stderr):
        assert SECRET not in text
        assert set_cookie.split(";")[0] not in text


def test_secret_option_not_logged(start_server) -> None:
    """--cookie_secret on the command line is not logged either, even at debug level."""
    server = start_server("--interval=0.02", "--logging=debug", f"--cookie_secret={SECRET}")
    with urllib.request.urlopen(server.url + "/"):
        pass
    assert server.stop() == 0
    assert SECRET not in server.log
