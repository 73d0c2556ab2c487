"""Running out of file descriptors, against a real server process under a low limit."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
import tornado.netutil
from support import MS, TIMEOUT, get_json, hang_up
from tornado.httpserver import HTTPServer
from tornado.websocket import websocket_connect

from timepush import acceptor, counters

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="reads a process's CPU time from Linux's /proc"
)

HARD = 128  # the hard limit on open files the server starts with
FITTING = HARD - acceptor.RESERVED_DESCRIPTORS  # the clients it can serve under that limit
ATTEMPTS = 3 * HARD  # handshakes thrown at it, each held open once answered
BATCH = 32  # handshakes in flight at once: fewer than the listen backlog
PROMPT = 1000 * MS  # every attempt hears back within this
INTERVAL = 0.05


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def handshake(port: int, client_id: str) -> bytes:
    return (
        f"GET /websocket?Id={client_id} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def attempt(port: int, client_id: str, held: list[Any]) -> tuple[int | str, float]:
    """Open a handshake and keep the connection; return the status (or "closed") and the wait."""
    started = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), PROMPT)
    except asyncio.TimeoutError:
        return "no answer", time.monotonic() - started
    held.append(writer)
    try:
        writer.write(handshake(port, client_id))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PROMPT)
        outcome: int | str = int(head.split(b" ", 2)[1])
    except (asyncio.IncompleteReadError, ConnectionError):
        outcome = "closed"
    except asyncio.TimeoutError:
        outcome = "no answer"
    return outcome, time.monotonic() - started


async def get_stats(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Any:
    """GET /stats on a kept-alive connection, as a monitor would."""
    writer.write(b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    length = int(re.search(rb"Content-Length: (\d+)", head, re.IGNORECASE).group(1))
    return json.loads(await reader.readexactly(length))


async def episode(server: Any) -> dict[str, Any]:
    port = server.port
    good = await websocket_connect(server.ws_url("good"))
    ticks: list[str] = []

    async def read_ticks() -> None:
        while (message := await good.read_message()) is not None:
            ticks.append(message)

    reading = asyncio.ensure_future(read_ticks())
    monitor = await asyncio.open_connection("127.0.0.1", port)
    held: list[asyncio.StreamWriter] = []
    outcomes: list[tuple[int | str, float]] = []
    deadline = time.monotonic() + 30 * TIMEOUT
    try:
        for start in range(0, ATTEMPTS, BATCH):
            if time.monotonic() > deadline:
                break
            batch = range(start, min(start + BATCH, ATTEMPTS))
            outcomes += await asyncio.gather(*(attempt(port, f"c{i}", held) for i in batch))

        # Everything is held now: the server must sit idle, keep ticking, and answer /stats.
        ticks_before = len(ticks)
        cpu_before, wall_before = cpu_seconds(server.process.pid), time.monotonic()
        await asyncio.sleep(500 * MS)
        cpu = (cpu_seconds(server.process.pid) - cpu_before) / (time.monotonic() - wall_before)
        during = await get_stats(*monitor)
        ticks_during = len(ticks) - ticks_before
    finally:
        for writer in held:
            writer.close()
        monitor[1].close()

    # Once the clients leave, the server accepts again by itself.
    recovered = None
    while recovered is None and time.monotonic() < deadline:
        try:
            recovered = await websocket_connect(server.ws_url("after"))
        except (ConnectionError, OSError):
            await asyncio.sleep(50 * MS)
    after = await asyncio.to_thread(get_json, server.url + "/stats")
    good.close()  # the reading task sees the end of it below
    if recovered is not None:
        await hang_up(recovered)
    await asyncio.wait_for(reading, TIMEOUT)
    return {
        "outcomes": outcomes,
        "cpu": cpu,
        "during": during,
        "ticks_during": ticks_during,
        "recovered": recovered is not None,
        "after": after,
    }


def test_limit_fitted(start_server: Any) -> None:
    """A --max_clients above the open-file limit is lowered with a warning naming both numbers."""
    server = start_server(f"--interval={INTERVAL}", open_files=(32, HARD))
    warning = server.wait_for_log(r"\[W .*--max_clients=10000 .* limit of (\d+) open files")
    assert int(warning.group(1)) == HARD  # the soft limit of 32 was raised to the hard one
    assert server.stats()["max_clients"] == FITTING
    assert server.stop() == 0


def test_limit_fits(start_server: Any) -> None:
    """A --max_clients that fits under the limit stays as it is, without a warning."""
    server = start_server(f"--max_clients={FITTING}", open_files=(32, HARD))
    assert server.stats()["max_clients"] == FITTING
    assert server.stop() == 0
    assert "does not fit" not in server.log


def test_out_of_descriptors(start_server: Any) -> None:
    """Past the limit every attempt hears back at once, the server idles, ticks, and recovers."""
    server = start_server(f"--interval={INTERVAL}", open_files=(HARD, HARD))
    result = asyncio.run(episode(server))
    outcomes = collections.Counter(outcome for outcome, _ in result["outcomes"])
    slowest = max(wait for _, wait in result["outcomes"])
    print(f"{dict(outcomes)}, slowest {slowest:.3f} s, CPU {result['cpu']:.0%} while held")

    # All ATTEMPTS were made; each got 101, 503 or a close, and within PROMPT.
    assert sum(outcomes.values()) == ATTEMPTS
    assert set(outcomes) == {101, 503, "closed"}, outcomes
    assert slowest < PROMPT
    # Every client the limit allows was served (the good one holds the last place).
    assert outcomes[101] == FITTING - 1

    # During the episode: idle, still ticking, /stats answering with the exact counts.
    assert result["cpu"] < 0.3, result["cpu"]
    assert result["ticks_during"] >= 3
    during = result["during"]
    assert during["clients"] == FITTING
    assert during["accept_paused"] == 1
    assert during["refused"] == {"full": outcomes[503], "no_descriptors": outcomes["closed"]}

    # Afterwards it accepts again by itself, and the log says so in a few lines.
    assert result["recovered"]
    assert result["after"]["accept_paused"] == 1
    assert server.stop() == 0
    about = [
        line
        for line in server.log.splitlines()
        if re.search(r"descriptor|open files|accepting|Traceback", line, re.IGNORECASE)
    ]
    assert len(about) <= 3, about
    assert [line for line in about if "Out of file descriptors" in line] != []


def test_tcpserver_internals() -> None:
    """Where add_sockets keeps a socket and its stop function is where Tornado's own does, and
    where server.stop() looks: the Acceptor stops and the socket closes."""

    async def scenario() -> None:
        reference = HTTPServer(lambda request: None)
        theirs = tornado.netutil.bind_sockets(0, "127.0.0.1")[0]
        reference.add_sockets([theirs])
        assert reference._sockets == {theirs.fileno(): theirs}
        assert callable(reference._handlers[theirs.fileno()])
        reference.stop()
        assert theirs.fileno() == -1

        server = HTTPServer(lambda request: None)
        ours = tornado.netutil.bind_sockets(0, "127.0.0.1")[0]
        acceptor.add_sockets(server, [ours], counters.Stats())
        stop = server._handlers[ours.fileno()]
        accept_loop = stop.__self__
        assert isinstance(accept_loop, acceptor.Acceptor) and accept_loop.spare is not None
        server.stop()
        assert ours.fileno() == -1
        assert accept_loop.spare is None  # Acceptor.stop() ran, and let its descriptor go

    asyncio.run(scenario())
