"""``--processes N``: workers forked by Tornado that share one port, and stop together."""

from __future__ import annotations

import asyncio
import collections
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from clients import Reader, closing
from redis_process import RedisProcess
from support import MS, ROOT, TICK, TIMEOUT, boundary_index, get_json

import app
from timepush import drain

ROUND = 50 * MS


def pid_of(node: str) -> int:
    return int(node.rpartition("-")[2])


CONNECTS = 1000


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize(
    ("signum", "closed"),
    [
        (signal.SIGTERM, (drain.CLOSE_SERVICE_RESTART, "Service restart")),
        (signal.SIGINT, (app.CLOSE_GOING_AWAY, "Server shutting down")),
    ],
)
def test_two_processes(
    start_server: Any, redis_server: RedisProcess, signum: int, closed: tuple[int, str]
) -> None:
    """Two workers both serve clients, tick together, and all stop cleanly on one signal: both
    drain on SIGTERM (1012), both close at once on Ctrl-C (1001), and the parent waits for them."""
    server = start_server(
        "--processes=2",
        f"--interval={TICK}",
        f"--redis={redis_server.url}",
        f"--redis_interval={ROUND}",
        f"--drain_seconds={200 * MS}",
    )
    counts: dict[str, int] = {}

    async def scenario() -> list[tuple[int | None, str | None]]:
        readers: list[Reader] = []
        # The kernel hands each connection to one worker or the other; go on until both have some.
        deadline = time.monotonic() + 10 * TIMEOUT
        while len([n for n in counts.values() if n]) < 2:
            assert time.monotonic() < deadline, counts
            readers.append(await Reader.connect(server.ws_url(f"c{len(readers)}")))
            stats = get_json(server.url + "/stats")
            counts[stats["node"]] = stats["clients"]
        ticks = [(await reader.ticks(1))[0] for reader in readers]
        for text in ticks:
            assert boundary_index(text, TICK)[1] < TICK  # each worker ticks on the boundary
        server.process.send_signal(signum)
        return [await reader.until_closed(5 * TIMEOUT) for reader in readers]

    closes = asyncio.run(closing(scenario()))
    assert closes == [closed] * len(closes)
    assert server.process.wait(5 * TIMEOUT) == 0
    # Each worker binds the port itself, and says so.
    assert len(set(re.findall(r"Listening on (http://\S+)", server.log))) == 1
    assert len(re.findall(r"Listening on http://", server.log)) == 2
    assert len(re.findall(r"child \d \(pid \d+\) exited normally", server.log)) == 2
    assert "Traceback" not in server.log and "KeyboardInterrupt" not in server.log
    assert not [node for node in counts if alive(pid_of(node))]


def test_connections_spread(start_server: Any, redis_server: RedisProcess) -> None:
    """New connections spread evenly over the workers, each on a listening socket of its own."""
    server = start_server("--processes=2", f"--redis={redis_server.url}")
    server.wait_for_log(r"Listening on http://(.|\n)*Listening on http://")
    nodes: collections.Counter[str] = collections.Counter()
    deadline = time.monotonic() + 50 * TIMEOUT
    for _ in range(CONNECTS):  # each request on a new connection
        assert time.monotonic() < deadline, nodes
        nodes[get_json(server.url + "/stats")["node"]] += 1
    print(f"{CONNECTS} connections: {sorted(nodes.values())}")
    # With one socket shared by both, a burst landed on one worker, and 200 split 116 to 84.
    assert len(nodes) == 2
    assert min(nodes.values()) > 0.4 * CONNECTS, nodes
    assert server.stop() == 0


def test_dead_child_restarted(start_server: Any, redis_server: RedisProcess) -> None:
    """A worker killed from outside is started again, and Tornado logs it."""
    server = start_server(
        "--processes=2", f"--redis={redis_server.url}", f"--redis_interval={ROUND}"
    )
    joined = r"Node \S+ joined the cluster"
    server.wait_for_log(rf"{joined}(.|\n)*{joined}")
    nodes: set[str] = set()
    deadline = time.monotonic() + 10 * TIMEOUT
    while len(nodes) < 2:
        assert time.monotonic() < deadline
        nodes.add(get_json(server.url + "/stats")["node"])
    victim = pid_of(nodes.pop())
    os.kill(victim, signal.SIGKILL)
    server.wait_for_log(rf"child \d \(pid {victim}\) killed by signal 9, restarting")
    server.wait_for_log(rf"killed by signal 9, restarting(.|\n)*{joined}")
    assert server.stop() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--processes=2"], "--processes other than 1 needs --redis"),
        (["--processes=0"], "an Id unique"),
        (["--processes=-1", "--redis=redis://127.0.0.1:1/0"], "must be 0 (one per CPU) or more"),
        (["--processes=2", "--redis=redis://127.0.0.1:1/0", "--debug"], "--debug reloads"),
        (["--redis=http://127.0.0.1:1/"], "not a Redis URL"),
        (["--redis=redis://127.0.0.1:port/0"], "not a URL"),
    ],
)
def test_refused(args: list[str], message: str) -> None:
    """A ``--processes`` or ``--redis`` setting that cannot work stops the server, saying why."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "--port=0", *args],
        capture_output=True,
        text=True,
        timeout=10 * TIMEOUT,
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert "Listening" not in result.stdout + result.stderr
