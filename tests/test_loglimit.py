"""Warnings that clients can cause are bounded per window; /stats keeps the exact counts."""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import re
import time
from typing import Any

from servers import ServerTestCase
from support import MS, TIMEOUT, get_json, hang_up
from tornado.testing import gen_test
from tornado.websocket import websocket_connect

import app
from timepush import loglimit

WINDOW = 500 * MS
DURATION = 3000 * MS
MAX_REQUESTS = 60_000  # the load is bounded in count as well as in time
CONNECTIONS = 8
PIPELINE = 25  # requests sent at once on a connection before reading the answers
HEADERS = (
    "Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)
# kind in /stats: (target, extra header, the status it must get)
REFUSALS = {
    "missing_id": ("/websocket", "", 400),
    "bad_id": ("/websocket?Id=tab%09here", "", 400),
    "origin": ("/websocket?Id=good", "Origin: https://evil.example\r\n", 403),
    "full": ("/websocket?Id=other", "", 503),
}
# Each logging call a refusal goes through, and how to recognise its line (or a summary's
# example of it). Tornado logs both Id problems from one call.
LOG_CALLS = {
    "origin": r"Refused a connection from origin",
    "id": r"\(127\.0\.0\.1\): (Missing Id|Id contains)",
    **{
        f"access {status}": rf"\b{status} GET /websocket\S* \(127\.0\.0\.1\) [\d.]+ms"
        for status in (400, 403, 503)
    },
}
SUMMARY = re.compile(r"([\d,]+) more lines? like (.*) in the last [\d.]+ s$")
LONGEST_LINE = 400  # bytes: every refusal line is cut short, ids to 100, origins to 200


async def refuse(port: int, deadline: float, sent: collections.Counter[str]) -> None:
    """Send refusals of every kind on one kept-alive connection, checking each status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    kinds = list(REFUSALS)
    try:
        while time.monotonic() < deadline and sum(sent.values()) < MAX_REQUESTS:
            batch = [kinds[(sum(sent.values()) + i) % len(kinds)] for i in range(PIPELINE)]
            writer.write(
                "".join(
                    f"GET {REFUSALS[kind][0]} HTTP/1.1\r\n{HEADERS}{REFUSALS[kind][1]}\r\n"
                    for kind in batch
                ).encode()
            )
            for kind in batch:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
                assert int(head.split(b" ", 2)[1]) == REFUSALS[kind][2], (kind, head)
                length = re.search(rb"Content-Length: (\d+)", head, re.IGNORECASE)
                await reader.readexactly(int(length.group(1)))
                sent[kind] += 1
    finally:
        writer.close()
        await writer.wait_closed()


async def load(server: Any) -> tuple[collections.Counter[str], float, dict[str, Any]]:
    good = await websocket_connect(server.ws_url("good"))  # fills the one place
    sent: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    await asyncio.gather(
        *(refuse(server.port, started + DURATION, sent) for _ in range(CONNECTIONS))
    )
    elapsed = time.monotonic() - started
    stats = await asyncio.to_thread(get_json, server.url + "/stats")
    await hang_up(good)
    return sent, elapsed, stats


def logged_counts(log: str) -> collections.Counter[str]:
    """How many of each call's lines the log accounts for: those written, and those summed up."""
    counts: collections.Counter[str] = collections.Counter()
    for line in log.splitlines():
        summary = SUMMARY.search(line)
        number, text = (int(summary[1].replace(",", "")), summary[2]) if summary else (1, line)
        for call, pattern in LOG_CALLS.items():
            if re.search(pattern, text):
                counts[call] += number
    return counts


def test_refusal_flood(start_server: Any) -> None:
    """Thousands of refusals a second leave a bounded log whose counts add up to /stats."""
    server = start_server("--max_clients=1", "--interval=0.05", f"--log_window={WINDOW}")
    sent, elapsed, stats = asyncio.run(load(server))
    assert server.stop() == 0  # and the windows still open are summed up on the way out
    print(f"{sum(sent.values())} refusals in {elapsed:.2f} s, {len(server.log)} bytes of log")

    # /stats counts every refusal, exactly.
    assert stats["refused"] == dict(sent)

    # At most LOG_BURST lines and a summary per logging call per window, however many came.
    windows = math.ceil(elapsed / WINDOW) + 1
    bound = len(LOG_CALLS) * (loglimit.LOG_BURST + 1) * windows
    lines = server.log.splitlines()
    about = [line for line in lines if any(re.search(p, line) for p in LOG_CALLS.values())]
    assert len(about) <= bound
    # Unbounded, every refusal would write one line or two: this load is past the bound.
    assert sum(sent.values()) > bound, "too little load to test the bound"
    assert len(server.log) <= (bound + 20) * LONGEST_LINE

    # Lines written plus the numbers in the summaries make up the exact count of each call.
    expected = {
        "origin": sent["origin"],
        "id": sent["missing_id"] + sent["bad_id"],
        "access 400": sent["missing_id"] + sent["bad_id"],
        "access 403": sent["origin"],
        "access 503": sent["full"],
    }
    assert logged_counts(server.log) == expected


class TestCloseWarnings(ServerTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.limit = loglimit.LogLimit(window=10 * TIMEOUT)  # no window ends during the test
        self.app_log.addFilter(self.limit)

    def tearDown(self) -> None:
        self.app_log.removeFilter(self.limit)
        super().tearDown()

    @gen_test
    async def test_flood_warnings_limited(self) -> None:
        """Flood closes past LOG_BURST are held back and counted in one line at the window's end."""
        floods = 3 * loglimit.LOG_BURST
        rate = self.get_app().settings["max_messages_per_second"]
        for i in range(floods):
            connection = await self.connect(f"flood{i}")
            for n in range(2 * rate):
                connection.write_message(f"spam {n}")
            await self.read_until_closed(connection)
            self.assertEqual(connection.close_code, app.CLOSE_POLICY_VIOLATION)
        self.limit.flush()
        warnings = [m for m in self.log.messages() if "too many messages" in m]
        self.assertEqual(app.stats.closed["flood"], floods)
        self.assertEqual(len(warnings), loglimit.LOG_BURST + 1)
        self.assertRegex(warnings[-1], rf"^{floods - loglimit.LOG_BURST} more lines like ")


class TestLogLimit(ServerTestCase):
    @gen_test
    async def test_windows(self) -> None:
        """Each call gets LOG_BURST lines a window, a summary at its end, then a fresh window."""
        logger = logging.getLogger("app.test")
        limit = loglimit.LogLimit(window=100 * MS)
        logger.addFilter(limit)
        try:
            for n in range(loglimit.LOG_BURST + 3):
                logger.warning("one kind %d", n)
                logger.warning("another kind %d", n)
            logger.info("information passes")
            await asyncio.sleep(200 * MS)
            logger.warning("one kind again")
        finally:
            logger.removeFilter(limit)
        messages = self.log.messages("app.test")
        for kind in ("one kind", "another kind"):
            logged = [m for m in messages if m.startswith(kind)]
            burst = [f"{kind} {n}" for n in range(loglimit.LOG_BURST)]
            self.assertEqual(logged[: loglimit.LOG_BURST], burst)
            summaries = [m for m in messages if f"like '{kind} 0'" in m]
            self.assertEqual(summaries, [f"3 more lines like '{kind} 0' in the last {0.1:.3g} s"])
        self.assertIn("information passes", messages)
        self.assertEqual(messages[-1], "one kind again")

    def test_one_more_line(self) -> None:
        """One line held back is counted in the singular."""
        logger = logging.getLogger("app.test")
        limit = loglimit.LogLimit(window=10 * TIMEOUT)
        logger.addFilter(limit)
        try:
            for n in range(loglimit.LOG_BURST + 1):
                logger.warning("a kind %d", n)
            limit.flush()
        finally:
            logger.removeFilter(limit)
        self.assertRegex(self.log.messages("app.test")[-1], r"^1 more line like 'a kind 0' ")


def test_cluster_warnings_bounded(redis_server: Any, start_server: Any) -> None:
    """A flood of messages on the cluster's channel that no node can use leaves at most
    LOG_BURST warnings and a line counting the rest per window: the limit covers the modules'
    own loggers, which a filter on the ``app`` logger never saw."""
    import redis

    from timepush import cluster

    window = 300 * MS
    server = start_server(
        "--interval=0.05", f"--redis={redis_server.url}", f"--log_window={window}"
    )
    server.wait_for_log(r"Node \S+ joined the cluster")
    flood = 40 * loglimit.LOG_BURST
    started = time.monotonic()
    with redis.Redis.from_url(redis_server.url) as client:
        for n in range(flood):
            client.publish(cluster.PREFIX + "all", f"not json {n}")

    def accounted() -> int:
        """Warnings written plus those the summaries count."""
        total = 0
        for line in server.log.splitlines():
            if "Ignored a cluster message" in line:
                summary = SUMMARY.search(line)
                total += int(summary[1].replace(",", "")) if summary else 1
        return total

    deadline = time.monotonic() + 10 * TIMEOUT
    while accounted() < flood:
        assert time.monotonic() < deadline, server.log[-2000:]
        time.sleep(10 * MS)
    windows = math.ceil((time.monotonic() - started) / window) + 1
    written = [line for line in server.log.splitlines() if "Ignored a cluster message" in line]
    assert accounted() == flood
    assert len(written) <= (loglimit.LOG_BURST + 1) * windows < flood
    assert server.stop() == 0
