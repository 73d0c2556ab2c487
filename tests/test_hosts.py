"""The Host check: a page on a rebound name reaches nothing, whatever its Origin says."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import pytest
from servers import ServerTestCase
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.testing import gen_test

import app

# Host headers, with {port} for the server's own port.
LOCAL = [
    "127.0.0.1:{port}",
    "127.0.0.1",
    "localhost:{port}",
    "localhost",
    "LocalHost:8888",
    "clock.localhost:{port}",
    "a.b.localhost",
    "[::1]:{port}",
    "[::1]",
]
FOREIGN = [
    "evil.example:8888",  # DNS rebinding: this name now points at 127.0.0.1
    "evil.example",
    "localhost.evil.example",  # begins like a local name
    "evillocalhost:8888",  # ends like one, without the dot
    "127.0.0.1.evil.example",
    "127.0.0.2:8888",
    "0.0.0.0:8888",
    "[::2]:8888",
    "[::1]x",
    "localhost:8888:8888",
    "localhost%2eevil.example",
    "",
]


class HostCase(ServerTestCase):
    async def outcome(self, host: str) -> dict[str, Any]:
        """What the page, /stats, a static file and the WebSocket answer for ``host``."""
        host = host.format(port=self.get_http_port())
        # A browser sends the Origin of the page it shows, which after rebinding matches Host.
        # (Tornado's origin check takes Host as sent, so a mixed-case one goes without.)
        headers = {"Host": host}
        if host == host.lower():
            headers["Origin"] = f"http://{host}"
        result: dict[str, Any] = {}
        for path in ("/", "/stats", "/static/clock.js"):
            request = HTTPRequest(self.get_url(path), headers=headers)
            response = await self.http_client.fetch(request, raise_error=False)
            result[path] = (response.code, response.reason)
        try:
            connection = await self.connect("h", headers)
        except HTTPClientError as error:
            result["/websocket"] = (error.code, error.message)
        else:
            result["/websocket"] = (101, await self.read(connection))
            connection.close()
            await self.read_until_closed(connection)
        return result

    def assert_answered(self, host: str, result: dict[str, Any]) -> None:
        self.assertEqual(
            {path: code for path, (code, _) in result.items()},
            {"/": 200, "/stats": 200, "/static/clock.js": 200, "/websocket": 101},
            host,
        )

    def assert_refused(self, host: str, result: dict[str, Any]) -> None:
        reason = f"Host not allowed: {host.format(port=self.get_http_port())!r}"
        self.assertEqual(
            result, {path: (403, reason) for path in result}, f"{host!r} was not refused"
        )


class TestLoopback(HostCase):
    @gen_test
    async def test_local_names_only(self) -> None:
        """On a loopback address only local names are answered, with any port or none."""
        for host in LOCAL:
            self.assert_answered(host, await self.outcome(host))
        for host in FOREIGN:
            self.assert_refused(host, await self.outcome(host))
        self.assertEqual(app.stats.refused, {"host": 4 * len(FOREIGN)})
        warnings = [m for m in self.log.messages() if m.startswith("Refused a request for host")]
        self.assertIn("Refused a request for host 'evil.example:8888'", warnings)
        self.assertEqual(len(warnings), 4 * len(FOREIGN))

    @gen_test
    async def test_host_bounded(self) -> None:
        """A long Host is cut short in the reason and in the log line."""
        host = "a" * 5000 + ".example"
        result = await self.outcome(host)
        self.assertEqual(result["/stats"], (403, f"Host not allowed: {host[:100]!r}"))
        self.assertTrue(all(len(m) < 300 for m in self.log.messages()))


class TestAllowedHosts(HostCase):
    app_settings: ClassVar[dict[str, Any]] = {
        "allowed_hosts": ["Clock.example", "*.apps.example", "[2001:db8::1]"]
    }

    @gen_test
    async def test_allowed_hosts(self) -> None:
        """--allowed_hosts adds names and *.name patterns to the local names, and nothing else."""
        answered = [
            "clock.example",
            "clock.example:443",
            "CLOCK.EXAMPLE:8888",
            "a.apps.example",
            "a.b.apps.example:8080",
            "[2001:db8::1]:8888",
            "localhost:{port}",
            "127.0.0.1:{port}",
        ]
        refused = [
            "evil.example:8888",
            "apps.example",  # the pattern covers the names below it only
            "xapps.example",
            "clock.example.evil.example",
            "a.apps.example.evil.example",
            "[2001:db8::2]",
        ]
        for host in answered:
            self.assert_answered(host, await self.outcome(host))
        for host in refused:
            self.assert_refused(host, await self.outcome(host))
        self.assertEqual(app.stats.refused, {"host": 4 * len(refused)})


class TestPublicAddress(HostCase):
    app_settings: ClassVar[dict[str, Any]] = {"address": "0.0.0.0"}

    @gen_test
    async def test_any_host_without_allowed_hosts(self) -> None:
        """On a public address without --allowed_hosts any Host is answered, as before."""
        for host in ["evil.example:8888", "clock.example", "[::2]", "127.0.0.1:{port}"]:
            self.assert_answered(host, await self.outcome(host))
        self.assertEqual(app.stats.refused, {})


class TestEverything(HostCase):
    app_settings: ClassVar[dict[str, Any]] = {"allowed_hosts": ["*"]}

    @gen_test
    async def test_star(self) -> None:
        """--allowed_hosts=* answers any Host, on a loopback address too."""
        for host in ["evil.example:8888", "[::2]", "localhost"]:
            self.assert_answered(host, await self.outcome(host))


@pytest.mark.parametrize(
    "entry",
    ["clock.example:8888", "http://clock.example", "a.*.example", "*example", "::1", "a b", "."],
)
def test_malformed_allowed_hosts(entry) -> None:
    """An --allowed_hosts entry that is not a name, *.name or [IPv6] stops the start."""
    with pytest.raises(ValueError, match="not a host name"):
        app.make_app(allowed_hosts=["clock.example", entry])


@pytest.mark.parametrize(
    "address, loopback",
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("192.168.1.10", False),
        ("clock.example", False),
    ],
)
def test_loopback_address(address, loopback) -> None:
    """Only a loopback --address turns the local-names default on."""
    assert bool(app.make_app(address=address).settings["host_patterns"]) is loopback


@pytest.mark.parametrize(
    "args, warned",
    [
        (["--address=0.0.0.0"], True),
        (["--address=0.0.0.0", "--allowed_hosts=clock.example"], False),
        (["--address=127.0.0.1"], False),
    ],
)
def test_startup_warning(start_server, args, warned) -> None:
    """Listening beyond loopback without --allowed_hosts logs one warning at startup."""
    server = start_server(*args)
    server.stats()  # answered once the loop runs, and the signal handlers are in place
    assert server.stop() == 0
    found = re.findall(r"\[W .*without --allowed_hosts.*DNS rebinding", server.log)
    assert len(found) == (1 if warned else 0), server.log
