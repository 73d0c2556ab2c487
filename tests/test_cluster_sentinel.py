"""A cluster on a Redis that fails over: two redis-servers (primary and replica) and Sentinel."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from clients import Reader, closing
from redis_process import RedisProcess, SentinelProcess, sentinel_missing
from servers import ServerProcess, post_push
from support import MS, ROOT, TICK, TIMEOUT, gaps, on_ci, tick_slots
from test_cluster import REPLACED, ROUND, TOKEN, eventually, joined

redis = pytest.importorskip(
    "redis", reason="the redis package is missing: pip install -e '.[redis]'"
)


class Failover:
    """A primary, its replica, and one Sentinel that watches them."""

    def __init__(self, directory: Path) -> None:
        for name in ("primary", "replica", "sentinel"):
            (directory / name).mkdir()
        self.primary = RedisProcess(directory / "primary")
        self.replica = RedisProcess(directory / "replica", replica_of=self.primary.port)
        self.sentinel: SentinelProcess | None = None
        with redis.Redis(port=self.replica.port) as replica:
            wait_for(lambda: replica.info("replication")["master_link_status"] == "up")
        self.sentinel = SentinelProcess(directory / "sentinel", self.primary.port)
        with redis.Redis(port=self.sentinel.port, decode_responses=True) as sentinel:
            # Sentinel fails over only to a replica it has found (by asking the primary).
            wait_for(lambda: sentinel.sentinel_slaves(self.sentinel.service))

    def stop(self) -> None:
        if self.sentinel is not None:
            self.sentinel.stop()
        self.replica.stop()
        self.primary.stop()


def wait_for(predicate: Callable[[], Any], timeout: float = 10_000 * MS) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {predicate}"
        time.sleep(10 * MS)


@pytest.fixture
def failover(tmp_path: Path) -> Iterator[Failover]:
    """A primary, a replica and a Sentinel of the test's own; skipped without them, except in
    CI."""
    missing = sentinel_missing()
    if missing:
        if on_ci():
            pytest.fail(f"the Sentinel test cannot run on CI: {missing}", pytrace=False)
        pytest.skip(missing)
    setup = Failover(tmp_path)
    yield setup
    setup.stop()


def test_primary_fails_over(failover: Failover, start_server: Callable[..., ServerProcess]) -> None:
    """The primary killed under clients on two nodes: ticks go on, the nodes follow Sentinel to
    the replica it promotes, and takeovers and pushes across nodes work again; the log says
    once that Redis moved and once that it is back."""
    assert failover.sentinel is not None
    url = failover.sentinel.url()
    a, b = (
        start_server(
            f"--interval={TICK}",
            f"--redis={url}",
            f"--redis_interval={ROUND}",
            env={"PUSH_TOKEN": TOKEN},
        )
        for _ in range(2)
    )
    primary = f"127.0.0.1:{failover.primary.port}"
    replica = f"127.0.0.1:{failover.replica.port}"

    async def scenario() -> None:
        await eventually(lambda: joined(a, 2) and joined(b, 2))
        assert a.stats()["redis_url"] == url
        assert a.stats()["redis_server"] == b.stats()["redis_server"] == primary
        on_a = await Reader.connect(a.ws_url("x"))
        on_b = await Reader.connect(b.ws_url("y"))
        await on_a.ticks(1)
        start = len(on_a.messages)
        failover.primary.stop()
        killed = time.monotonic()
        for node in (a, b):
            await eventually(
                lambda n=node: n.stats()["redis_server"] == replica and joined(n, 2), 10_000 * MS
            )
        moved = time.monotonic() - killed
        status, _, answer = await post_push(a.url, {"Id": "y", "message": "after"}, TOKEN)
        assert (status, answer) == (200, {"reached": 1})
        await on_b.wait_for(lambda r: "after" in r.messages)
        newer = await Reader.connect(b.ws_url("x"))
        assert await on_a.until_closed(1000 * MS) == REPLACED
        working = time.monotonic() - killed
        print(f"on the new primary {moved:.2f} s after the kill, all working in {working:.2f} s")
        stats = a.stats()
        missed = sum(n - m - 1 for m, n in gaps(tick_slots(on_a.messages[start:-1], TICK)))
        assert missed <= stats["ticks_skipped_late"] + stats["ticks_skipped_slow"], stats
        await newer.ticks(2)
        for reader in (on_b, newer):
            reader.close()

    asyncio.run(closing(scenario()))
    for node in (a, b):
        assert len(re.findall(r"out of reach", node.log)) == 1, node.log
        assert len(re.findall(r"Redis moved", node.log)) == 1, node.log
        assert len(re.findall(r"is back", node.log)) == 1, node.log
        assert "Traceback" not in node.log
        assert node.stop() == 0


def test_sentinel_address() -> None:
    """A Sentinel URL names the Sentinels, the service, the database and the primary's
    password; what is shown of it leaves the password out."""
    from timepush import cluster

    url = "redis+sentinel://:s%40cret@10.0.0.1:26379,[::1]:26380/main/2"
    assert cluster.sentinel_address(url) == (
        [("10.0.0.1", 26379), ("::1", 26380)],
        "main",
        2,
        "s@cret",
    )
    assert cluster.safe_url(url) == "redis+sentinel://10.0.0.1:26379,[::1]:26380/main/2"
    assert cluster.sentinel_address("redis+sentinel://h:1/main") == ([("h", 1)], "main", 0, None)


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://127.0.0.1/main/0",
        "redis+sentinel://127.0.0.1:26379,127.0.0.1/main/0",
        "redis+sentinel://127.0.0.1:port/main/0",
        "redis+sentinel://127.0.0.1:99999/main/0",
        "redis+sentinel://127.0.0.1:26379",
        "redis+sentinel://127.0.0.1:26379/main/zero",
        "redis+sentinel://127.0.0.1:26379/main/0?timeout=1",
        "redis+sentinel:127.0.0.1:26379/main",
    ],
)
def test_bad_sentinel_url(url: str) -> None:
    """A Sentinel URL that cannot work stops the server before it forks, saying why."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "--port=0", "--processes=2", f"--redis={url}"],
        capture_output=True,
        text=True,
        timeout=10 * TIMEOUT,
    )
    assert result.returncode != 0
    assert "not a Sentinel URL (redis+sentinel://" in result.stderr
    assert "Starting" not in result.stdout + result.stderr
