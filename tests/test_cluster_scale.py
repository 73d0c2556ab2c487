"""What a cluster costs Redis, and the guarantees that must hold without per-client work: a
node's rounds cost the same at 10 clients and at 1,000; a dead node's Ids are freed; the newer
of two connections made while Redis was down stays; a takeover notice the node missed still
closes the older connection."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from typing import Any, Callable

import pytest
from clients import RawClient, Reader, closing
from redis_process import RedisProcess
from servers import ServerProcess, post_push
from support import MS, TICK, gaps, tick_slots
from test_cluster import REPLACED, ROUND, TOKEN, eventually, joined, owner_node

redis = pytest.importorskip(
    "redis", reason="the redis package is missing: pip install -e '.[redis]'"
)


@pytest.fixture
def start_node(
    redis_server: RedisProcess, start_server: Callable[..., ServerProcess]
) -> Callable[..., ServerProcess]:
    """Start ``python app.py`` as one more node on the test's redis-server, ``interval`` apart."""

    def start(interval: float = ROUND, tick: float = TICK) -> ServerProcess:
        return start_server(
            f"--interval={tick}",
            f"--redis={redis_server.url}",
            f"--redis_interval={interval}",
            env={"PUSH_TOKEN": TOKEN},
        )

    return start


def connect(redis_server: RedisProcess) -> Any:
    return redis.Redis.from_url(redis_server.url, decode_responses=True)


def commands(client: Any) -> int:
    return client.info("stats")["total_commands_processed"]


def smembers(client: Any) -> int:
    return client.info("commandstats").get("cmdstat_smembers", {}).get("calls", 0)


def test_flat_cost(start_node: Any, redis_server: RedisProcess) -> None:
    """A node's Redis commands per idle round are the same at 10 and at 1,000 clients, no
    key has a timer of its own, and after a restart Redis gets each client once, in batches,
    while ticks go on."""
    node = start_node(tick=5 * TICK)
    raws: list[RawClient] = []

    async def open_clients(count: int) -> None:
        end = len(raws) + count
        for start in range(len(raws), end, 100):
            opened = await asyncio.gather(
                *(
                    RawClient.connect(node.port, f"c{n}")
                    for n in range(start, min(end, start + 100))
                )
            )
            assert {status for status, _ in opened} == {101}
            raws.extend(raw for _, raw in opened)

    async def round_cost(client: Any) -> float:
        """Commands per round (a round's heartbeat is the one SMEMBERS), the fewest of three
        tries of ten rounds: a loop held up by a burst of handshakes for three rounds lets the
        node's heartbeat expire, and it registers its clients again (once)."""
        costs = []
        for _ in range(3):
            before, rounds = commands(client), smembers(client)
            await asyncio.sleep(10 * ROUND)
            rounds = smembers(client) - rounds
            costs.append((commands(client) - before - 2) / max(1, rounds))  # less our INFOs
        return round(min(costs), 1)

    async def scenario() -> None:
        try:
            await measured()
        finally:
            for raw in raws:
                raw.close()

    async def measured() -> None:
        await eventually(lambda: joined(node, 1))
        name = node.stats()["node"]
        with connect(redis_server) as client:
            costs = []
            for count in (10, 990):
                await open_clients(count)
                await eventually(lambda: client.scard(f"time-push:ids:{name}") == len(raws))
                await asyncio.sleep(2 * ROUND)  # the last claims are written
                costs.append(await round_cost(client))
            print(f"commands a round: {costs[0]} at 10 clients, {costs[1]} at 1,000")
            assert costs[0] < 10, costs  # a few commands a round
            assert abs(costs[1] - costs[0]) <= 1.5, costs
            assert client.ttl("time-push:id:c0") == -1
            # Redis restarts empty: the node registers its 1,000 clients again, once.
            reader = await Reader.connect(node.ws_url("reader"))
            await reader.ticks(1)
            start = len(reader.messages)
            redis_server.stop()
            await eventually(lambda: node.stats()["redis"] == "down")
            redis_server.start()
            await eventually(lambda: "is back" in node.log)
            await eventually(lambda: client.scard(f"time-push:ids:{name}") == len(raws) + 1)
            await asyncio.sleep(2 * ROUND)
            assert owner_node(redis_server, "c999") == name
            # One claim each (a script: the restarted Redis counts from zero), and no more.
            scripts = client.info("commandstats")["cmdstat_evalsha"]
            print(f"registered 1,001 clients again with {scripts['calls']} scripts")
            assert scripts["calls"] == len(raws) + 1, scripts
            await reader.ticks(3)
            stats = node.stats()
            missed = sum(n - m - 1 for m, n in gaps(tick_slots(reader.messages[start:], 5 * TICK)))
            assert missed <= stats["ticks_skipped_late"] + stats["ticks_skipped_slow"], stats
            reader.close()

    asyncio.run(closing(scenario()))
    assert "Traceback" not in node.log


def test_dead_node(start_node: Any, redis_server: RedisProcess) -> None:
    """A node killed without a goodbye: within a few rounds its Ids are free (a push answers
    404), and removed from Redis by another node."""
    a, b = start_node(), start_node()

    async def scenario() -> None:
        await eventually(lambda: joined(a, 2) and joined(b, 2))
        on_b = await Reader.connect(b.ws_url("on-b"))
        await eventually(lambda: owner_node(redis_server, "on-b") == b.stats()["node"])
        b.process.kill()
        killed = time.monotonic()
        body = {"Id": "on-b", "message": "?"}
        while (await post_push(a.url, body, TOKEN))[0] != 404:
            assert time.monotonic() - killed < 20 * ROUND + 1000 * MS
            await asyncio.sleep(ROUND / 2)
        print(f"Ids of a dead node free in {time.monotonic() - killed:.2f} s")
        await eventually(lambda: owner_node(redis_server, "on-b") is None)
        again = await Reader.connect(a.ws_url("on-b"))
        await again.ticks(2)
        again.close()
        on_b.close()

    asyncio.run(closing(scenario()))
    assert re.search(r"Node \S+ is gone; its Ids are free", a.log), a.log


def test_newer_wins_after_redis_restart(start_node: Any, redis_server: RedisProcess) -> None:
    """Two connections with one Id on two nodes while Redis is down: once it is back, the newer
    stays, whichever node registers again first."""
    a, b = start_node(8 * ROUND), start_node()  # a retries more slowly: it registers last

    async def scenario() -> None:
        await eventually(lambda: joined(a, 2) and joined(b, 2))
        redis_server.stop()
        await eventually(lambda: a.stats()["redis"] == b.stats()["redis"] == "down")
        older = await Reader.connect(a.ws_url("same"))
        await older.ticks(1)
        newer = await Reader.connect(b.ws_url("same"))
        await newer.ticks(1)
        redis_server.start()
        assert await older.until_closed(40 * ROUND + 1000 * MS) == REPLACED
        await newer.ticks(round(5 * ROUND / TICK))
        assert owner_node(redis_server, "same") == b.stats()["node"]
        newer.close()

    asyncio.run(closing(scenario()))
    for node in (a, b):
        assert "Traceback" not in node.log


def test_missed_notice(start_node: Any, redis_server: RedisProcess) -> None:
    """A node stopped, its links to Redis cut, while another node takes an Id from it: once it
    runs again it closes the older connection within a few rounds."""
    a, b = start_node(10 * ROUND), start_node()  # a's heartbeat outlives the pause

    async def scenario() -> None:
        await eventually(lambda: joined(a, 2) and joined(b, 2))
        name = a.stats()["node"]
        older = await Reader.connect(a.ws_url("x"))
        await eventually(lambda: owner_node(redis_server, "x") == name)
        a.process.send_signal(signal.SIGSTOP)
        try:
            with connect(redis_server) as client:
                for link in client.client_list():
                    if link["name"] == "time-push:" + name:
                        client.client_kill_filter(_id=link["id"])
            newer = await Reader.connect(b.ws_url("x"))
            await eventually(lambda: owner_node(redis_server, "x") == b.stats()["node"])
            await asyncio.sleep(2 * ROUND)
        finally:
            a.process.send_signal(signal.SIGCONT)
        assert await older.until_closed(40 * ROUND + 1000 * MS) == REPLACED
        await newer.ticks(2)
        newer.close()

    asyncio.run(closing(scenario()))
    assert "Traceback" not in a.log + b.log
