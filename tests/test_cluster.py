"""Several nodes sharing one real redis-server: takeover, push, stats, Redis going away."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import urllib.error
import urllib.request
from typing import Any, Callable

import pytest
from clients import Reader, closing
from redis_process import RedisProcess
from servers import ServerProcess, post_push
from support import MS, TICK, TIMEOUT, gaps, tick_slots

import app

redis = pytest.importorskip(
    "redis", reason="the redis package is missing: pip install -e '.[redis]'"
)

ROUND = 50 * MS  # --redis_interval: a node's rounds with Redis (heartbeat, echo)
TOKEN = "test-token-9c1f"
REPLACED = (app.CLOSE_REPLACED, "Replaced by a newer connection with the same Id")


@pytest.fixture
def start_node(
    redis_server: RedisProcess, start_server: Callable[..., ServerProcess]
) -> Callable[..., ServerProcess]:
    """Start ``python app.py`` as one more node of the cluster on the test's redis-server."""

    def start(*args: str) -> ServerProcess:
        return start_server(
            f"--interval={TICK}",
            f"--redis={redis_server.url}",
            f"--redis_interval={ROUND}",
            *args,
            env={"PUSH_TOKEN": TOKEN},
        )

    return start


def joined(node: ServerProcess, count: int) -> bool:
    stats = node.stats()
    return stats["redis"] == "up" and len((stats["cluster"] or {}).get("nodes", [])) == count


async def eventually(predicate: Callable[[], Any], timeout: float = 5 * TIMEOUT) -> Any:
    """Poll ``predicate`` until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {predicate}"
        await asyncio.sleep(10 * MS)
    return result


def owner_node(redis_server: RedisProcess, client_id: str) -> str | None:
    with redis.Redis.from_url(redis_server.url, decode_responses=True) as client:
        owner = client.get("time-push:id:" + client_id)
    return owner.partition(" ")[2].rpartition("#")[0] if owner else None  # "time node#serial"


def test_takeover_across_nodes(start_node: Any, redis_server: RedisProcess) -> None:
    """A connection on node B takes an Id from node A: A's gets 4000 within a second, B's stays."""
    a, b = start_node(), start_node()

    async def scenario() -> None:
        await eventually(lambda: joined(a, 2) and joined(b, 2))
        older = await Reader.connect(a.ws_url("x"))
        await older.ticks(1)
        started = time.monotonic()
        newer = await Reader.connect(b.ws_url("x"))
        assert await older.until_closed(1000 * MS) == REPLACED
        took = time.monotonic() - started
        # The older node's on_close did not remove the newer owner: it keeps it round after round.
        await newer.ticks(round(10 * ROUND / TICK))
        assert owner_node(redis_server, "x") == b.stats()["node"]
        print(f"takeover across nodes in {took * 1000:.0f} ms")
        older.close()
        newer.close()

    asyncio.run(closing(scenario()))
    assert "A client took over" not in a.log
    assert re.search(r"Client 'x' taken over on another node", a.log)


def test_simultaneous_connects(start_node: Any) -> None:
    """Connections with the same Id made at once on three nodes: exactly one survives."""
    nodes = [start_node() for _ in range(3)]

    async def scenario() -> None:
        await eventually(lambda: all(joined(node, 3) for node in nodes))
        for client_id in ("s1", "s2", "s3"):
            readers = await asyncio.gather(
                *(Reader.connect(node.ws_url(client_id)) for node in nodes)
            )
            # Claims reach Redis in any order: the newest connection stays, the others close.
            await eventually(lambda rs=readers: sum(r.closed is None for r in rs) <= 1)
            await asyncio.sleep(5 * ROUND)
            alive = [reader for reader in readers if reader.closed is None]
            assert len(alive) == 1, [reader.closed for reader in readers]
            assert all(r.closed == REPLACED for r in readers if r is not alive[0])
            await alive[0].ticks(3)
            for reader in readers:
                reader.close()

    asyncio.run(closing(scenario()))


def test_push_across_nodes(start_node: Any) -> None:
    """A push by Id sent to node A reaches the client on node B; a push to all reaches all."""
    a, b = start_node(), start_node()

    async def scenario() -> None:
        await eventually(lambda: joined(a, 2) and joined(b, 2))
        on_a = await Reader.connect(a.ws_url("on-a"))
        on_b = [await Reader.connect(b.ws_url(f"on-b{n}")) for n in range(2)]
        await on_b[0].ticks(1)
        status, _, answer = await post_push(a.url, {"Id": "on-b0", "message": "hello b"}, TOKEN)
        assert (status, answer) == (200, {"reached": 1})
        await on_b[0].wait_for(lambda r: "hello b" in r.messages)
        status, _, answer = await post_push(b.url, {"message": "to all"}, TOKEN)
        assert (status, answer) == (200, {"reached": 3})
        for reader in (on_a, *on_b):
            await reader.wait_for(lambda r: "to all" in r.messages)
        assert "hello b" not in on_a.messages + on_b[1].messages
        status, reason, _ = await post_push(a.url, {"Id": "nowhere", "message": "?"}, TOKEN)
        assert (status, reason) == (404, "No client with this Id is connected")
        for reader in (on_a, *on_b):
            reader.close()

    asyncio.run(closing(scenario()))
    assert TOKEN not in a.log + b.log


def test_cluster_stats(start_node: Any) -> None:
    """``/stats`` sums clients and refusals over the live nodes, and forgets a node that died."""
    a, b = start_node(), start_node()

    async def scenario() -> None:
        await eventually(lambda: joined(a, 2) and joined(b, 2))
        readers = [await Reader.connect(node.ws_url(f"c{n}")) for n, node in enumerate([a, a, b])]
        for url in (a.url + "/websocket?Id=", a.url + "/websocket?Id=%0A", b.url + "/websocket"):
            with pytest.raises(urllib.error.HTTPError, match="400") as refused:
                urllib.request.urlopen(url, timeout=TIMEOUT)
            refused.value.close()

        def summed() -> dict[str, Any] | None:
            cluster = a.stats()["cluster"]
            ok = cluster["clients"] == 3 and cluster["refused"] == {"missing_id": 2, "bad_id": 1}
            # a: "" and "\n" refused; b: "" refused
            return cluster if ok else None

        cluster = await eventually(summed)
        assert sorted(cluster["nodes"]) == sorted([a.stats()["node"], b.stats()["node"]])
        assert cluster["ticks_sent"] > 0  # a sum of moving figures, each read at its own round
        b.process.kill()  # no goodbye: its heartbeat must expire
        cluster = await eventually(lambda: joined(a, 1) and a.stats()["cluster"])
        assert cluster["clients"] == 2 and cluster["refused"] == {"missing_id": 1, "bad_id": 1}
        for reader in readers:
            reader.close()

    asyncio.run(closing(scenario()))


def test_redis_restart(start_node: Any, redis_server: RedisProcess) -> None:
    """Redis killed and restarted: ticks go on, one warning, one line back, takeover works again."""
    a, b = start_node(), start_node()

    async def scenario() -> None:
        await eventually(lambda: joined(a, 2) and joined(b, 2))
        on_a = await Reader.connect(a.ws_url("kept"))
        await on_a.ticks(1)
        start = len(on_a.messages)
        redis_server.stop()
        await eventually(lambda: a.stats()["redis"] == "down" and b.stats()["redis"] == "down")
        assert a.stats()["cluster"] is None
        await on_a.ticks(round(20 * ROUND / TICK))  # a while down: many failed reconnects
        redis_server.start()
        await eventually(lambda: "is back" in a.log and "is back" in b.log)
        await on_a.ticks(3)
        # Every tick arrived, but those the server itself counts as skipped because the
        # (busy) machine woke its SendThread late.
        stats = a.stats()
        missed = sum(b - a - 1 for a, b in gaps(tick_slots(on_a.messages[start:], TICK)))
        assert missed <= stats["ticks_skipped_late"] + stats["ticks_skipped_slow"], stats
        # Node A put its client back in the registry, so a takeover from B reaches it.
        newer = await Reader.connect(b.ws_url("kept"))
        assert await on_a.until_closed(1000 * MS) == REPLACED
        await newer.ticks(2)
        on_a.close()
        newer.close()

    asyncio.run(closing(scenario()))
    for node in (a, b):
        assert len(re.findall(r"out of reach", node.log)) == 1, node.log
        assert len(re.findall(r"is back", node.log)) == 1, node.log
        assert "Traceback" not in node.log
        assert node.stop() == 0


def test_silent_subscription(redis_server: RedisProcess, caplog: Any) -> None:
    """A subscription that stops delivering without an error is noticed (its echo) and rebuilt."""
    from timepush import cluster

    caplog.set_level(logging.INFO, "timepush.cluster")
    delivered: list[tuple[str, str]] = []

    def node(name: str) -> cluster.Cluster:
        return cluster.Cluster(
            redis_server.url,
            node=name,
            deliver=lambda client_id, text: delivered.append((client_id, text)) or 1,
            deliver_all=lambda text: 0,
            close=lambda *args: None,
            takeover=REPLACED,
            local_stats=lambda: {"clients": 0},
            interval=ROUND,
        )

    async def scenario() -> None:
        a, b = node("a"), node("b")
        a.start()
        b.start()
        await eventually(lambda: a.up and b.up)
        a.claim("x")
        await eventually(lambda: owner_node(redis_server, "x") == "a")
        assert await b.push("x", "first") == (1, [])
        # Strangers' messages on a node's channel are ignored, boundedly logged.
        for junk in ("not json", '{"op": "close"}', "[1]", "x" * 5000):
            await b.redis.publish("time-push:node:a", junk)
        await a.pubsub.unsubscribe()  # still connected, no error, but deaf from now on
        await eventually(lambda: "stopped delivering" in caplog.text)
        await eventually(lambda: a.up)
        assert await b.push("x", "again") == (1, [])
        assert delivered == [("x", "first"), ("x", "again")]
        await a.stop()
        await b.stop()

    asyncio.run(closing(scenario()))
    assert caplog.text.count("Ignored a cluster message") == 4
    assert max(len(line) for line in caplog.messages) < 400
    assert "Traceback" not in caplog.text
