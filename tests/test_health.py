"""``/healthz`` and ``/readyz``: a probe's answers, readiness while draining and while Redis is
down, any Host, and no line at INFO for each probe."""

from __future__ import annotations

import logging
import time
import urllib.request
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from servers import ServerProcess, ServerTestCase
from support import MS, TIMEOUT, free_port
from tornado.httpclient import HTTPResponse
from tornado.testing import gen_test

import app


class TestHealth(ServerTestCase):
    app_settings: ClassVar[dict[str, Any]] = {"allowed_hosts": ["clock.example"]}

    async def get(self, path: str, host: str = "clock.example") -> HTTPResponse:
        return await self.http_client.fetch(
            self.get_url(path), headers={"Host": host}, raise_error=False
        )

    @gen_test
    async def test_ready_until_draining(self) -> None:
        """Both answer 200 while the node serves; once it drains, /readyz answers 503 with the
        reason and /healthz still 200."""
        for path, text in (("/healthz", "ok"), ("/readyz", "ready")):
            response = await self.get(path)
            self.assertEqual((response.code, response.body.decode()), (200, f"{text}\n"))
        app.stats.drain("shutting down")
        ready = await self.get("/readyz")
        self.assertEqual((ready.code, ready.reason), (503, "Draining"))
        self.assertEqual(ready.body.decode(), "draining: shutting down\n")
        self.assertEqual((await self.get("/healthz")).code, 200)

    @gen_test
    async def test_any_host(self) -> None:
        """A probe that names the node by its address is answered; /stats and /metrics are not."""
        for path in ("/healthz", "/readyz"):
            self.assertEqual((await self.get(path, host="10.1.2.3:8888")).code, 200)
        for path in ("/stats", "/metrics"):
            self.assertEqual((await self.get(path, host="10.1.2.3:8888")).code, 403)

    @gen_test
    async def test_quiet_in_the_access_log(self) -> None:
        """Probes and scrapes are logged at DEBUG, a 503 while draining included."""
        access = logging.getLogger("tornado.access")
        level = access.level
        access.setLevel(logging.DEBUG)
        try:
            for path in ("/healthz", "/readyz", "/metrics", "/stats"):
                await self.get(path)
            app.stats.drain("shutting down")
            await self.get("/readyz")
        finally:
            access.setLevel(level)
        levels = {
            (record.getMessage().split()[2], record.levelname)
            for record in self.log.records
            if record.name == "tornado.access"
        }
        self.assertEqual(
            levels,
            {
                ("/healthz", "DEBUG"),
                ("/readyz", "DEBUG"),
                ("/metrics", "DEBUG"),
                ("/stats", "INFO"),
            },
        )


def test_ready_while_redis_is_down(start_server: Callable[..., ServerProcess]) -> None:
    """A cluster node whose link to Redis is down stays ready, and says so."""
    pytest.importorskip("redis", reason="the redis package is missing: pip install -e '.[redis]'")
    server = start_server(
        f"--redis=redis://127.0.0.1:{free_port()}/0", f"--redis_interval={50 * MS}"
    )
    deadline = time.monotonic() + 5 * TIMEOUT
    while True:
        with urllib.request.urlopen(server.url + "/readyz", timeout=TIMEOUT) as response:
            status, body = response.status, response.read().decode()
        if "Redis" in body:
            break
        assert time.monotonic() < deadline, body
        time.sleep(10 * MS)
    assert (status, body) == (
        200,
        "ready; the link to Redis is down: serving this node's clients\n",
    )
