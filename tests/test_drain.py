"""SIGTERM drains (``timepush/drain.py``): the node turns unready and refuses new clients at once,
closes its clients with 1012 a few at a time over ``--drain_seconds`` while the ticks go on, and
exits 0. Ctrl-C, and ``--drain_seconds=0``, close everyone at once with 1001."""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from clients import Reader, closing
from support import MS, TICK, TIMEOUT
from tornado.httpclient import HTTPClientError
from tornado.websocket import websocket_connect

import app
from timepush import drain

COUNT = 10
DRAIN = 500 * MS


def get(url: str) -> tuple[int, str]:
    """GET ``url``; its status and body, whatever the status."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_sigterm_drains(start_server: Any) -> None:
    """On SIGTERM /readyz answers 503 at once and /healthz 200, a new WebSocket gets 503 with
    a reason, the clients are closed with 1012 spread over the drain while still ticking, and
    the process exits 0."""
    server = start_server(f"--interval={TICK}", f"--drain_seconds={DRAIN}")

    async def scenario() -> list[tuple[float, int, tuple[Any, Any]]]:
        readers = [await Reader.connect(server.ws_url(f"c{n}")) for n in range(COUNT)]
        for reader in readers:
            await reader.ticks(1)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        deadline = signalled + TIMEOUT
        while (ready := await asyncio.to_thread(get, server.url + "/readyz"))[0] != 503:
            assert time.monotonic() < deadline, ready
            await asyncio.sleep(5 * MS)
        assert ready[1].startswith("draining: restarting")
        assert (await asyncio.to_thread(get, server.url + "/healthz"))[0] == 200
        with pytest.raises(HTTPClientError) as refused:
            await websocket_connect(server.ws_url("late"))
        assert (refused.value.code, refused.value.message) == (503, drain.REFUSED)

        async def leave(reader: Reader) -> tuple[float, int, tuple[Any, Any]]:
            ticks = len(reader.messages)
            closed = await reader.until_closed(5 * TIMEOUT)
            return time.monotonic() - signalled, len(reader.messages) - ticks, closed

        return await asyncio.gather(*(leave(reader) for reader in readers))

    ends = asyncio.run(closing(scenario()))
    assert {closed for _, _, closed in ends} == {drain.RESTARTING}
    times = sorted(at for at, _, _ in ends)
    # Spread over the drain: a batch every DRAIN / COUNT, the last one a batch before the end.
    assert times[-1] - times[0] > DRAIN / 2, times
    assert times[-1] < DRAIN + TIMEOUT, times
    last = max(ends)
    assert last[1] > 0, "the last client to go got no tick while it waited"
    assert server.process.wait(5 * TIMEOUT) == 0
    assert "[E " not in server.log and "Traceback" not in server.log


@pytest.mark.parametrize(
    ("signum", "drain_seconds"),
    [(signal.SIGINT, 10.0), (signal.SIGTERM, 0.0)],
    ids=["ctrl-c", "sigterm-no-drain"],
)
def test_quick_stop(start_server: Any, signum: int, drain_seconds: float) -> None:
    """Ctrl-C, whatever --drain_seconds says, and SIGTERM with --drain_seconds=0 close every
    client at once with 1001."""
    server = start_server(f"--interval={TICK}", f"--drain_seconds={drain_seconds}")

    async def scenario() -> list[tuple[Any, Any]]:
        readers = [await Reader.connect(server.ws_url(f"c{n}")) for n in range(COUNT)]
        for reader in readers:
            await reader.ticks(1)
        server.process.send_signal(signum)
        return [await reader.until_closed(TIMEOUT) for reader in readers]

    started = time.monotonic()
    closes = asyncio.run(closing(scenario()))
    assert closes == [(app.CLOSE_GOING_AWAY, "Server shutting down")] * COUNT
    assert server.process.wait(5 * TIMEOUT) == 0
    assert time.monotonic() - started < 5 * TIMEOUT
