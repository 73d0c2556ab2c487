"""Refusals before the handshake: a foreign origin, a bad Id, a full server."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from hypothesis import given, settings
from hypothesis import strategies as st
from servers import ServerTestCase
from support import hang_up
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.testing import gen_test
from tornado.websocket import websocket_connect

import app


class TestSameOrigin(ServerTestCase):
    @gen_test
    async def test_check_origin_same_origin(self) -> None:
        """With no allowed_origins, only the page's own origin may open a WebSocket."""
        own = f"http://127.0.0.1:{self.get_http_port()}"
        connection = await self.connect("page", {"Origin": own})
        self.assertIsNotNone(await self.read(connection))
        for origin in ("http://evil.example", "http://localhost:1", "null"):
            self.assertEqual((await self.refusal("x", {"Origin": origin}))[0], 403, origin)
        self.assertEqual(app.stats.refused, {"origin": 3})
        self.assertEqual(list(app.clients), ["page"])


ADMITTED = ["https://a.example", "https://a.example:443", "http://b.example:8080"]
REFUSED = [
    "http://a.example",  # another scheme
    "https://a.example:8443",  # another port
    "https://a.example.evil.example",  # extends the host
    "https://xa.example",  # contains it
    "https://a.example@evil.example",  # user info: the host is evil.example
    "https://a.example/evil",  # not an origin at all
    "http://b.example",  # the port left out means 80
    "http://b.example:80800",  # extends the port
    "https://b.example:8080",  # another scheme
    "http://evil.example/http://b.example:8080",
    "null",
    "",
]


class TestAllowedOrigins(ServerTestCase):
    app_settings: ClassVar[dict[str, Any]] = {
        "allowed_origins": ["https://a.example", "http://b.example:8080"]
    }

    @gen_test
    async def test_allowed_origins_exact_match(self) -> None:
        """allowed_origins admits exactly the origins listed, none containing or extending them."""
        outcome = {}
        for origin in ADMITTED + REFUSED:
            try:
                connection = await self.connect("o", {"Origin": origin})
            except HTTPClientError as error:
                outcome[origin] = error.code
            else:
                outcome[origin] = 101
                connection.close()
                await self.read_until_closed(connection)
        expected = {origin: 101 for origin in ADMITTED} | {origin: 403 for origin in REFUSED}
        self.assertEqual(outcome, expected)
        self.assertEqual(app.stats.refused, {"origin": len(REFUSED)})


def test_allowed_origins_option(start_server) -> None:
    """--allowed_origins=a,b on the command line admits exactly a and b (and the page's own)."""
    server = start_server("--allowed_origins=https://a.example,http://b.example:8080")
    own = f"http://127.0.0.1:{server.port}"

    async def outcome(origin: str) -> int:
        request = HTTPRequest(server.ws_url("o"), headers={"Origin": origin})
        try:
            connection = await websocket_connect(request)
        except HTTPClientError as error:
            return error.code
        await hang_up(connection)
        return 101

    async def main() -> dict[str, int]:
        return {origin: await outcome(origin) for origin in [own, *ADMITTED, *REFUSED]}

    expected = {origin: 101 for origin in [own, *ADMITTED]} | {o: 403 for o in REFUSED}
    assert asyncio.run(main()) == expected
    assert server.stop() == 0
    assert "Traceback" not in server.log


# The documented rule: 1 to 64 printable characters, letters of any script, digits,
# punctuation, symbols and spaces.
PRINTABLE = st.characters(categories=["L", "M", "N", "P", "S"]) | st.just(" ")
VALID_IDS = st.text(PRINTABLE, min_size=1, max_size=app.MAX_ID_LENGTH)
# Control characters (C0, DEL, C1) and the Unicode line and paragraph separators.
CONTROL = st.characters(categories=["Cc", "Zl", "Zp"])
TOO_LONG_IDS = st.text(PRINTABLE, min_size=app.MAX_ID_LENGTH + 1, max_size=3 * app.MAX_ID_LENGTH)


@st.composite
def ids_with_a_control_character(draw: st.DrawFn) -> str:
    text = draw(st.text(PRINTABLE, max_size=app.MAX_ID_LENGTH - 1))
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(CONTROL) + text[at:]


class TestId(ServerTestCase):
    @gen_test
    async def test_missing_id_400(self) -> None:
        """No Id, or an empty one, is refused with 400 and a reason, and counted as missing_id."""
        self.assertEqual(await self.refusal(None), (400, "Missing Id query argument"))
        self.assertEqual(await self.refusal(""), (400, "Missing Id query argument"))
        self.assertEqual(app.stats.refused, {"missing_id": 2})
        self.assertEqual(app.clients, {})

    @gen_test
    async def test_boundary_ids(self) -> None:
        """An Id of exactly 64 characters connects; 65 is refused with its reason."""
        connection = await self.connect("é" * 64)
        self.assertIsNotNone(await self.read(connection))
        self.assertEqual(await self.refusal("é" * 65), (400, "Id longer than 64 characters"))
        self.assertEqual(list(app.clients), ["é" * 64])

    @gen_test
    async def test_control_characters_refused(self) -> None:
        """Each of U+0000 to U+001F and U+007F in an Id gets 400, none is quietly made a space."""
        outcome = {}
        for code in [*range(0x20), 0x7F]:
            try:
                connection = await self.connect(f"a{chr(code)}b")
            except HTTPClientError as error:
                outcome[code] = (error.code, error.message)
            else:
                outcome[code] = (101, repr(list(app.clients)))
                connection.close()
                await self.read_until_closed(connection)
        refused = (400, "Id contains control characters")
        self.assertEqual(outcome, {code: refused for code in outcome})

    @gen_test
    async def test_id_not_utf8(self) -> None:
        """An Id whose bytes are not UTF-8 is refused with a reason and counted as bad_id."""
        with self.assertRaises(HTTPClientError) as caught:
            await websocket_connect(self.ws_url(None) + "?Id=%FF%FE")
        self.assertEqual(caught.exception.code, 400)
        self.assertNotEqual(caught.exception.message, "Bad Request")
        self.assertEqual(app.stats.refused, {"bad_id": 1})

    @settings(max_examples=40, deadline=None, database=None)
    @given(client_id=VALID_IDS)
    def test_valid_ids(self, client_id: str) -> None:
        """Any Id of 1 to 64 printable characters connects and is logged as one escaped line."""
        self.io_loop.run_sync(lambda: self.check_valid_id(client_id))

    async def check_valid_id(self, client_id: str) -> None:
        self.log.records.clear()
        connection = await self.connect(client_id)
        self.assertIsNotNone(await self.read(connection))
        self.assertEqual(list(app.clients), [client_id])
        connection.close()
        await self.read_until_closed(connection)
        await self.wait_until(lambda: not app.clients)
        connected = [m for m in self.log.messages() if m.startswith("Client ")]
        self.assertEqual(len(connected), 2)  # connected, left
        for message in connected:
            self.assertIn(repr(client_id), message)
            self.assertEqual(message.splitlines(), [message])

    @settings(max_examples=60, deadline=None, database=None)
    @given(client_id=st.one_of(ids_with_a_control_character(), TOO_LONG_IDS))
    def test_invalid_ids(self, client_id: str) -> None:
        """An Id too long or holding a control character is refused with 400 and a reason."""
        self.io_loop.run_sync(lambda: self.check_invalid_id(client_id))

    async def check_invalid_id(self, client_id: str) -> None:
        before = app.stats.refused["bad_id"]
        if len(client_id) > app.MAX_ID_LENGTH:
            expected = "Id longer than 64 characters"
        else:
            expected = "Id contains control characters"
        self.assertEqual(await self.refusal(client_id), (400, expected))
        self.assertEqual(app.stats.refused["bad_id"], before + 1)
        self.assertEqual(app.clients, {})
        for message in self.log.messages("tornado.general"):
            self.assertEqual(message.splitlines(), [message])


class TestMaxClients(ServerTestCase):
    app_settings: ClassVar[dict[str, Any]] = {"max_clients": 2}

    @gen_test
    async def test_max_clients_503_and_freed_slot(
        self,
    ) -> None:
        """The third client gets 503 with a reason; once a client leaves, a new one gets in."""
        first = await self.connect("a")
        await self.connect("b")
        self.assertEqual(await self.refusal("c"), (503, "Server full, try again later"))
        self.assertEqual(app.stats.refused, {"full": 1})
        first.close()
        await self.read_until_closed(first)
        await self.wait_until(lambda: len(app.clients) == 1)
        third = await self.connect("c")
        self.assertIsNotNone(await self.read(third))
        self.assertEqual(sorted(app.clients), ["b", "c"])

    @gen_test
    async def test_takeover_when_full(self) -> None:
        """When full, a reconnect with an Id already connected replaces the old one (4000)."""
        old = await self.connect("a")
        await self.connect("b")
        new = await self.connect("a")
        await self.read_until_closed(old)
        self.assertEqual(old.close_code, app.CLOSE_REPLACED)
        self.assertIsNotNone(await self.read(new))
        self.assertIsNotNone(await self.read(new))
        self.assertEqual(sorted(app.clients), ["a", "b"])
        self.assertFalse(app.clients["a"]["object"].ws_connection.is_closing())
        self.assertEqual(app.stats.refused, {})

    @gen_test
    async def test_max_clients_simultaneous(self) -> None:
        """Of many clients connecting at once, exactly max_clients get in, the rest get 503."""
        attempts = [self.connect(f"c{i}") for i in range(12)]
        results = await asyncio.gather(*attempts, return_exceptions=True)
        refused = [r for r in results if isinstance(r, HTTPClientError)]
        self.assertEqual([r.code for r in refused], [503] * 10)
        self.assertEqual(len(app.clients), 2)
        self.assertEqual(app.stats.refused, {"full": 10})

    @gen_test
    async def test_full_is_not_an_error(self) -> None:
        """A 503 because the server is full is logged as a warning, not as an error."""
        await self.connect("a")
        await self.connect("b")
        await self.refusal("c")
        refusals = [
            r.levelname
            for r in self.log.records
            if r.name == "tornado.access" and r.getMessage().startswith("503 ")
        ]
        self.assertEqual(refusals, ["WARNING"])
