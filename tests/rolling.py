"""A rolling restart behind nginx, measured: for tests/test_proxy.py and the benchmark.

Clients that come back as the page does (``clients.Returner``) connect through nginx to the
nodes; then each node in turn gets SIGTERM, is started again on its port, and is waited for
until ``/readyz`` answers 200, before the next. ``figures()`` says what the clients saw.
"""

from __future__ import annotations

import asyncio
import collections
import statistics
import time
import urllib.error
import urllib.request
from typing import Any, Callable

from clients import Returner
from servers import ServerProcess
from support import MS, TIMEOUT, tick_slots

BIN = 0.1  # seconds: the peaks are per 100 ms


def wait_ready(server: ServerProcess, timeout: float) -> None:
    """Wait until the node's /readyz answers 200."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(server.url + "/readyz", timeout=TIMEOUT) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{server.url} never became ready:\n{server.log}")
        time.sleep(10 * MS)


def peak(times: list[float]) -> int:
    """The most of ``times`` that fall in one 100 ms bin."""
    bins = collections.Counter(int(t / BIN) for t in times)
    return max(bins.values(), default=0)


class RollingRestart:
    """``count`` Returners on ``url`` (nginx's WebSocket address, without the query), and the
    nodes behind it; ``start(port)`` starts a node again on its port."""

    def __init__(
        self,
        url: str,
        nodes: list[ServerProcess],
        start: Callable[[int], ServerProcess],
        *,
        count: int,
        window: float,
        interval: float,
    ) -> None:
        self.clients = [Returner(f"{url}?Id=r{n}", window=window) for n in range(count)]
        self.nodes = nodes
        self.start = start
        self.interval = interval
        self.restarts: list[dict[str, Any]] = []
        self.lags: list[float] = []  # how late the clients' loop woke, for a 10 ms sleep
        self.old_nodes: list[ServerProcess] = []

    async def all_connected(self, timeout: float) -> None:
        """Wait until every client is connected and has read a tick since."""
        deadline = time.monotonic() + timeout
        marks = [len(client.ticks) for client in self.clients]
        while not all(c.connected and len(c.ticks) > m for c, m in zip(self.clients, marks)):
            assert time.monotonic() < deadline, "not every client came back"
            await asyncio.sleep(10 * MS)

    async def watch_loop(self) -> None:
        """Note how late the clients' own loop runs: busy, it reads every clock late."""
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(10 * MS)
            self.lags.append(loop.time() - before - 10 * MS)

    async def run(self, drain_timeout: float) -> None:
        """Connect every client, restart each node in turn, and wait for all to be back."""
        tasks = [asyncio.ensure_future(self.watch_loop())]
        for client in self.clients:
            tasks.append(asyncio.ensure_future(client.run()))
            await asyncio.sleep(0)
        try:
            await self.all_connected(len(self.clients) * 10 * MS + 5 * TIMEOUT)
            for index, node in enumerate(self.nodes):
                signalled = time.monotonic()
                code = await asyncio.to_thread(node.stop, timeout=drain_timeout)
                assert code == 0, node.log
                stopped = time.monotonic()
                self.old_nodes.append(node)
                node = self.nodes[index] = await asyncio.to_thread(self.start, node.port)
                await asyncio.to_thread(wait_ready, node, 5 * TIMEOUT)
                self.restarts.append({"signalled": signalled, "stopped": stopped})
                await self.all_connected(drain_timeout)
            self.ended = time.monotonic()
            self.connected_at_end = sum(client.connected for client in self.clients)
            stats = [await asyncio.to_thread(node.stats) for node in self.nodes]
            self.held = sum(figures["clients"] for figures in stats)
        finally:
            for client in self.clients:
                await client.stop()
            tasks[0].cancel()
            await asyncio.wait(tasks, timeout=TIMEOUT)

    def figures(self) -> dict[str, Any]:
        """What the clients saw: ticks missed, and how the closes and comebacks were spread."""
        # A tick no client got was never sent (a node's SendThread skips the ticks it wakes too
        # late for, on a busy machine): a client misses the ticks that others got and it did not.
        slots = [set(tick_slots(client.ticks, self.interval)) for client in self.clients]
        sent = set().union(*slots)
        missed = [
            len({slot for slot in sent if min(own) <= slot <= max(own)} - own) for own in slots
        ]
        per_restart = []
        ends = [restart["signalled"] for restart in self.restarts[1:]] + [self.ended]
        for restart, end in zip(self.restarts, ends):
            since, until = restart["signalled"], restart["stopped"]
            closes = [t for c in self.clients for t, code in c.closed if since <= t <= until]
            codes = collections.Counter(
                code for c in self.clients for t, code in c.closed if since <= t <= until
            )
            comebacks = [t for c in self.clients for t in c.opened if since <= t <= end]
            per_restart.append(
                {
                    "closed": len(closes),
                    "close_codes": dict(codes),
                    "closes_over_s": round(max(closes) - min(closes), 3) if closes else 0,
                    "closes_peak_per_100ms": peak(closes),
                    "reconnects": len(comebacks),
                    "reconnects_over_s": round(max(comebacks) - min(comebacks), 3)
                    if comebacks
                    else 0,
                    "reconnects_peak_per_100ms": peak(comebacks),
                    "sigterm_to_exit_s": round(until - since, 3),
                }
            )
        spread = sorted(missed)
        return {
            "clients": len(self.clients),
            "connected_at_end": self.connected_at_end,
            "held_by_the_nodes": self.held,
            "replaced": sum(code == 4000 for c in self.clients for _, code in c.closed),
            "refused_handshakes": sum(c.refused for c in self.clients),
            "client_loop_late_ms": {
                "median": round(statistics.median(self.lags) * 1000, 1),
                "max": round(max(self.lags) * 1000, 1),
            },
            "ticks_missed": {
                "median": statistics.median(spread),
                "p99": spread[int(0.99 * (len(spread) - 1))],
                "max": spread[-1],
                "counts": dict(sorted(collections.Counter(missed).items())),
            },
            "restarts": per_restart,
        }
