"""Faults that must not take a cluster down: strangers' messages and heartbeat entries in Redis,
Redis errors during a push."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from typing import Any, Callable

import pytest
from clients import Reader, closing
from redis_process import RedisProcess
from servers import ServerProcess, post_push
from support import MS, TICK, TIMEOUT
from test_cluster import ROUND, TOKEN, eventually, joined

redis = pytest.importorskip(
    "redis", reason="the redis package is missing: pip install -e '.[redis]'"
)

IGNORED = "Ignored a cluster message"


@pytest.fixture
def start_node(
    redis_server: RedisProcess, start_server: Callable[..., ServerProcess]
) -> Callable[..., ServerProcess]:
    """Start ``python app.py`` as one more node on the test's redis-server, ``interval`` apart."""

    def start(interval: float = ROUND) -> ServerProcess:
        return start_server(
            f"--interval={TICK}",
            f"--redis={redis_server.url}",
            f"--redis_interval={interval}",
            env={"PUSH_TOKEN": TOKEN},
        )

    return start


def connect(redis_server: RedisProcess) -> Any:
    return redis.Redis.from_url(redis_server.url)


def healthy(node: ServerProcess) -> None:
    """The node never lost its link and never logged a traceback."""
    assert "Traceback" not in node.log, node.log
    assert "out of reach" not in node.log, node.log
    assert "Cluster link failed" not in node.log, node.log


# Messages a node cannot use, published where every node listens.
JUNK = [
    b"[" * 100_000,  # deeper than the JSON parser can go
    b"x" * 2_000_000,  # bigger than any message a node sends
    b"\xff\xfe not UTF-8",
    b"not json",
    b"null",
    b"[1]",
    b'"echo"',
    b'{"op": 5}',
    b'{"op": ["echo"]}',
    b'{"op": "dance"}',
    b'{"op": "close", "id": ["x"], "owner": "n#1"}',
    b'{"op": "close", "id": "x"}',
    b'{"op": "push", "from": 5, "request": 1, "text": "junk 1"}',
    b'{"op": "push", "from": "n", "request": "1", "text": "junk 2"}',
    b'{"op": "push", "from": "n", "request": 1, "text": ["junk 3"]}',
    b'{"op": "push", "from": "n", "request": 1, "text": "\\ud800"}',
    b'{"op": "push", "from": "n", "request": 1, "id": 7, "text": "junk 4"}',
    b'{"op": "reply", "request": 1, "reached": "many"}',
]


def test_junk_messages(start_node: Any, redis_server: RedisProcess) -> None:
    """Messages a node cannot use, of any shape or size, are counted in /stats and ignored; the
    log says so a bounded number of times; the link stays up and pushes across nodes work."""
    a, b = start_node(), start_node()
    repeats = 5

    async def scenario() -> None:
        await eventually(lambda: joined(a, 2) and joined(b, 2))
        on_b = await Reader.connect(b.ws_url("on-b"))
        await on_b.ticks(1)
        with connect(redis_server) as client:
            for _ in range(repeats):
                for junk in JUNK:
                    client.publish("time-push:all", junk)
        expected = repeats * len(JUNK)
        for node in (a, b):
            await eventually(lambda n=node: n.stats()["cluster_messages_ignored"] == expected)
        # Several rounds later the link is still up, and a push from A reaches B's client.
        await on_b.ticks(round(5 * ROUND / TICK))
        for node in (a, b):
            assert node.stats()["redis"] == "up"
        status, _, answer = await post_push(a.url, {"Id": "on-b", "message": "after"}, TOKEN)
        assert (status, answer) == (200, {"reached": 1})
        await on_b.wait_for(lambda r: "after" in r.messages)
        assert not [m for m in on_b.messages if m.startswith("junk")]
        on_b.close()

    asyncio.run(closing(scenario()))
    for node in (a, b):
        healthy(node)
        lines = [line for line in node.lines if IGNORED in line]
        assert 1 <= len(lines) <= 5, lines  # the log's limit: 5 of one kind in a window
        assert max(len(line) for line in lines) < 400, lines


# Heartbeat entries no node writes: each is the stats of a made-up node in the set of nodes.
BAD_ENTRIES = {
    "list": b"[]",
    "string": b'"a string"',
    "words": b'{"clients": "many", "refused": {"full": "lots"}}',
    "nested": b'{"refused": {"full": {"deeper": 1}}}',
    "infinite": b'{"clients": 1e400}',
    "long-number": b'{"clients": ' + b"9" * 5000 + b"}",
    "negative": b'{"clients": -3}',
    "nodes": b'{"nodes": 7}',
    "deep": b"[" * 100_000,
    "huge": b'{"clients": 1, "pad": "' + b"x" * 2_000_000 + b'"}',
    "not-utf-8": b'{"clients": \xff}',
}


def test_bad_heartbeat_entries(start_node: Any, redis_server: RedisProcess) -> None:
    """Heartbeat entries no node wrote are left out of the totals and expire; the link stays up
    and pushes across nodes keep working meanwhile."""
    a, b = start_node(), start_node()

    async def scenario() -> None:
        await eventually(lambda: joined(a, 2) and joined(b, 2))
        on_b = await Reader.connect(b.ws_url("on-b"))
        await on_b.ticks(1)
        await eventually(lambda: a.stats()["cluster"]["clients"] == 1)
        with connect(redis_server) as client:
            for name, value in BAD_ENTRIES.items():
                client.set("time-push:stats:" + name, value)
            client.sadd("time-push:nodes", *BAD_ENTRIES, b"\xff")
        # Pushes across nodes go on for many rounds, and the totals leave the bad entries out.
        for n in range(20):
            status, _, answer = await post_push(a.url, {"Id": "on-b", "message": f"p{n}"}, TOKEN)
            assert (status, answer) == (200, {"reached": 1}), n
            stats = a.stats()
            assert stats["redis"] == "up", n
            assert sorted(stats["cluster"]["nodes"]) == sorted(
                [a.stats()["node"], b.stats()["node"]]
            )
            assert stats["cluster"]["clients"] == 1
            await asyncio.sleep(ROUND / 2)
        with connect(redis_server) as client:
            await eventually(
                lambda: not client.exists(*(f"time-push:stats:{n}" for n in BAD_ENTRIES))
            )
            # A name that is not UTF-8 cannot be named back to Redis: it stays, skipped.
            names = {a.stats()["node"].encode(), b.stats()["node"].encode(), b"\xff"}
            assert client.smembers("time-push:nodes") == names
        on_b.close()

    asyncio.run(closing(scenario()))
    for node in (a, b):
        healthy(node)
    assert "heartbeat entries that no node writes" in a.log + b.log  # whichever saw them first


LINK_DOWN = (503, "Cluster link down, try again", {"error": "Cluster link down, try again"})


def test_redis_lost_during_push(start_node: Any, redis_server: RedisProcess) -> None:
    """Redis gone while a push waits for its answer: 503 with a reason, never a 500; once Redis
    is back, pushes reach the other node again."""
    a, b = start_node(), start_node()

    async def scenario() -> None:
        await eventually(lambda: joined(a, 2) and joined(b, 2))
        on_b = await Reader.connect(b.ws_url("on-b"))
        await on_b.ticks(1)
        with connect(redis_server) as client:
            client.client_pause(round(5 * TIMEOUT * 1000))  # the lookup waits...
        body = {"Id": "on-b", "message": "lost"}
        pushing = asyncio.ensure_future(post_push(a.url, body, TOKEN))
        await asyncio.sleep(5 * TICK)
        redis_server.stop()  # ... and its connection is closed under it
        assert await pushing == LINK_DOWN
        redis_server.start()
        await eventually(lambda: joined(a, 2) and joined(b, 2))
        status, _, answer = await post_push(a.url, {"Id": "on-b", "message": "after"}, TOKEN)
        assert (status, answer) == (200, {"reached": 1})
        on_b.close()

    asyncio.run(closing(scenario()))
    for node in (a, b):
        assert "Traceback" not in node.log, node.log


def test_subscribers_dropped_during_pushes(start_node: Any, redis_server: RedisProcess) -> None:
    """Redis drops subscribers that fall behind while 40 pushes to all run at once: each push
    gets 503 or a 200 that reached every client or names the nodes that did not answer, never
    a 500, and no node logs a traceback. (Whether both nodes rejoin afterwards is not asserted:
    once, on Python 3.9 with redis-py 7.0.1 in a full run, they had not within 10 s.)"""
    a, b = start_node(), start_node()

    async def scenario() -> None:
        await eventually(lambda: joined(a, 2) and joined(b, 2))
        readers = [await Reader.connect(node.ws_url(f"r{n}")) for n, node in enumerate([a, b, b])]
        await readers[-1].ticks(1)
        with connect(redis_server) as client:
            client.config_set("client-output-buffer-limit", "pubsub 1kb 1kb 0")
            big = {"message": "x" * 4096}
            answers = await asyncio.gather(*(post_push(a.url, big, TOKEN) for _ in range(40)))
            client.config_set("client-output-buffer-limit", "pubsub 32mb 8mb 60")
        for answer in answers:
            assert answer[:2] == LINK_DOWN[:2] or answer[:2] == (200, "OK"), answer
            if answer[0] == 200:
                assert answer[2] == {"reached": 3} or answer[2]["unanswered"] == [
                    b.stats()["node"]
                ], answer
        for reader in readers:
            reader.close()

    asyncio.run(closing(scenario()))
    for node in (a, b):
        assert "Traceback" not in node.log, node.log


def test_bad_bodies_in_a_cluster(start_node: Any) -> None:
    """In a cluster too, a text that cannot be sent as UTF-8 is refused before any node has it."""
    a, b = start_node(), start_node()
    reason = '"message" has a lone surrogate'

    async def scenario() -> None:
        await eventually(lambda: joined(a, 2) and joined(b, 2))
        on_b = await Reader.connect(b.ws_url("on-b"))
        await on_b.ticks(1)
        for body in (b'{"message": "\\ud800"}', b'{"Id": "on-b", "message": "\\ud800"}'):
            assert await post_push(a.url, body, TOKEN) == (400, reason, {"error": reason})
        on_b.close()

    asyncio.run(closing(scenario()))
    for node in (a, b):
        healthy(node)


def test_redis_full(start_node: Any, redis_server: RedisProcess) -> None:
    """Redis out of memory (maxmemory, noeviction): each node says so once and keeps its link;
    a claim refused meanwhile is retried, so once Redis has room the newest connection wins."""
    from test_cluster import REPLACED, owner_node

    a, b = start_node(), start_node()

    async def scenario() -> None:
        await eventually(lambda: joined(a, 2) and joined(b, 2))
        older = await Reader.connect(a.ws_url("x"))
        await eventually(lambda: owner_node(redis_server, "x") == a.stats()["node"])
        with connect(redis_server) as client:
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("maxmemory", "1")  # every write that needs memory is refused
            await eventually(lambda: "is full" in a.log and "is full" in b.log)
            newer = await Reader.connect(b.ws_url("x"))
            # Many rounds: both connections stay (the takeover cannot be written), links stay up.
            for _ in range(10):
                await asyncio.sleep(ROUND)
                assert a.stats()["redis"] == b.stats()["redis"] == "up"
            assert older.closed is None and newer.closed is None
            client.config_set("maxmemory", "0")
        assert await older.until_closed(1000 * MS) == REPLACED
        await newer.ticks(round(5 * ROUND / TICK))
        assert owner_node(redis_server, "x") == b.stats()["node"]
        newer.close()

    asyncio.run(closing(scenario()))
    for node in (a, b):
        healthy(node)
        assert len(re.findall(r"is full", node.log)) == 1, node.log
        assert len(re.findall(r"takes writes again", node.log)) == 1, node.log


def test_stranger_on_the_broadcast_channel(start_node: Any, redis_server: RedisProcess) -> None:
    """A subscriber that is not a node, on the channel of pushes to all, is never waited for."""
    a, b = start_node(), start_node()

    async def scenario() -> None:
        await eventually(lambda: joined(a, 2) and joined(b, 2))
        readers = [await Reader.connect(node.ws_url(f"r{n}")) for n, node in enumerate([a, b])]
        await readers[-1].ticks(1)
        with connect(redis_server) as client, client.pubsub() as stranger:
            stranger.subscribe("time-push:all")
            for n in range(3):
                started = time.monotonic()
                answer = await post_push(a.url, {"message": f"all {n}"}, TOKEN)
                took = time.monotonic() - started
                assert answer == (200, "OK", {"reached": 2})
                assert took < TIMEOUT / 4, took  # a node waits a round trip, not its timeout
        for reader in readers:
            await reader.wait_for(lambda r: "all 2" in r.messages)
            reader.close()

    asyncio.run(closing(scenario()))
    for node in (a, b):
        healthy(node)


def test_node_that_does_not_answer(start_node: Any) -> None:
    """A node stopped (SIGSTOP) while its heartbeat is still live: a push to its client answers
    504 naming it, not 404; a push to all says what it reached and which node did not answer."""
    a, b = start_node(), start_node(20 * ROUND)  # b's heartbeat outlives a's wait for it

    async def scenario() -> None:
        await eventually(lambda: joined(a, 2) and joined(b, 2))
        on_a = await Reader.connect(a.ws_url("on-a"))
        on_b = await Reader.connect(b.ws_url("on-b"))
        await on_b.ticks(1)
        name = b.stats()["node"]
        b.process.send_signal(signal.SIGSTOP)
        try:
            status, reason, answer = await post_push(a.url, {"Id": "on-b", "message": "1"}, TOKEN)
            assert status == 504, (status, reason, answer)
            assert answer == {"error": reason, "unanswered": [name]}
            answer = await post_push(a.url, {"message": "2"}, TOKEN)
            assert answer == (200, "OK", {"reached": 1, "unanswered": [name]})
        finally:
            b.process.send_signal(signal.SIGCONT)
        await on_a.wait_for(lambda r: "2" in r.messages)
        status, _, answer = await post_push(a.url, {"Id": "on-b", "message": "3"}, TOKEN)
        assert (status, answer) == (200, {"reached": 1})
        on_a.close()
        on_b.close()

    asyncio.run(closing(scenario()))
    healthy(a)
