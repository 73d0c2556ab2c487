"""What the server counts, and ``GET /stats``, which reports it as JSON.

One ``Stats`` object belongs to the loop's thread, like the handlers: every module that counts
is handed it (through the application's settings, or as an argument), and ``reset()`` makes it
fresh for a test. Optional parts add their own figures with ``sources``. ``/metrics``
(``timepush/metrics.py``) reads the same object, and a few counts that only it reports. This
module imports nothing of the project.
"""

from __future__ import annotations

import bisect
import collections
import os
import socket
import time
from collections.abc import Iterator
from typing import Any, Callable

import tornado.web


def node_name() -> str:
    """A name for this process that no other process has: the host's name and the pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


# Upper bounds, in seconds, of the buckets that count how long each tick took to go out.
FANOUT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Close codes counted by their number; any other a client sends is counted as "other", so that
# a client cannot make up new ones without end.
CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 4000})


class FanoutTimes:
    """How long each tick took to go out: the last ones as they were, in milliseconds (for
    ``/stats``), and every one counted into ``FANOUT_BUCKETS`` (for ``/metrics``)."""

    def __init__(self, last: collections.deque[float]) -> None:
        self.last = last
        self.buckets = [0] * (len(FANOUT_BUCKETS) + 1)  # the last: above every bound
        self.total_ms = 0.0

    def append(self, ms: float) -> None:
        self.last.append(ms)
        self.buckets[bisect.bisect_left(FANOUT_BUCKETS, ms / 1000)] += 1
        self.total_ms += ms

    def __iter__(self) -> Iterator[float]:
        return iter(self.last)

    def __len__(self) -> int:
        return len(self.last)


class Stats:
    """Counters for ``/stats``, kept by the loop's thread."""

    def __init__(self) -> None:
        # Functions that return more figures for /stats (clients connected, the cluster's).
        self.sources: list[Callable[[], dict[str, Any]]] = []
        self.reset()

    def reset(self) -> None:
        """Start every count again from zero."""
        self.started = time.monotonic()
        self.ticks = 0
        self.ticks_sent = 0
        self.ticks_skipped_slow = 0  # not written: the client had not read the last one
        self.ticks_skipped_late = 0  # not sent: the machine was paused past them
        self.messages_received = 0
        self.accept_paused = 0
        self.pushed = 0
        self.pushes_skipped_slow = 0
        self.refused: collections.Counter[str] = collections.Counter()
        self.closed: collections.Counter[str] = collections.Counter()
        self.fanout_ms = FanoutTimes(collections.deque(maxlen=100))
        # Reported by /metrics only, so that /stats stays as it was.
        self.opened = 0
        self.takeovers_here = 0  # the rest of closed["replaced"] came from other nodes
        self.ended: collections.Counter[str] = collections.Counter()  # by close code
        self.draining = ""  # why this node takes no new clients, once it is shutting down

    def count_open(self, takeover: bool) -> None:
        """A connection opened; ``takeover``: in the place of one here with the same Id."""
        self.opened += 1
        self.takeovers_here += takeover

    def count_close(self, code: int | None) -> None:
        """A connection ended with this close code (None: it broke without a closing handshake)."""
        self.ended["none" if code is None else str(code) if code in CLOSE_CODES else "other"] += 1

    def drain(self, reason: str) -> None:
        """Take no new clients from now on: ``/readyz`` answers 503 with ``reason``."""
        self.draining = reason

    def sourced(self) -> dict[str, Any]:
        """The figures that optional parts add (clients connected, the cluster's)."""
        figures: dict[str, Any] = {}
        for source in self.sources:
            figures.update(source())
        return figures

    def as_dict(self) -> dict[str, Any]:
        figures = {
            "node": node_name(),
            "uptime_seconds": round(time.monotonic() - self.started, 3),
            "ticks": self.ticks,
            "ticks_sent": self.ticks_sent,
            "ticks_skipped_slow": self.ticks_skipped_slow,
            "ticks_skipped_late": self.ticks_skipped_late,
            "messages_received": self.messages_received,
            "accept_paused": self.accept_paused,
            "refused": dict(self.refused),
            "closed": dict(self.closed),
            "fanout_ms": [round(ms, 3) for ms in self.fanout_ms],
            "pushed": self.pushed,
            "pushes_skipped_slow": self.pushes_skipped_slow,
        }
        return {**figures, **self.sourced()}


class StatsHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        stats = self.settings["stats"]
        self.write({**stats.as_dict(), "max_clients": self.settings["max_clients"]})
