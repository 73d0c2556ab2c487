"""What the server counts, and ``GET /stats``, which reports it as JSON.

One ``Stats`` object belongs to the loop's thread, like the handlers: every module that counts
is handed it (through the application's settings, or as an argument), and ``reset()`` makes it
fresh for a test. Optional parts add their own figures with ``sources``. This module imports
nothing of the project.
"""

from __future__ import annotations

import collections
import os
import socket
import time
from typing import Any, Callable

import tornado.web


def node_name() -> str:
    """A name for this process that no other process has: the host's name and the pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


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
        self.fanout_ms: collections.deque[float] = collections.deque(maxlen=100)

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
        for source in self.sources:
            figures.update(source())
        return figures


class StatsHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        stats = self.settings["stats"]
        self.write({**stats.as_dict(), "max_clients": self.settings["max_clients"]})
