"""The baseline of the fan-out benchmark: the article's loop made thread-safe, nothing more.

``SendThread`` wakes at the turn of every interval and hands the time to the IOLoop with
``add_callback``, as ``app.py`` does; the callback then calls ``write_message`` on each client in
turn. That call encodes a frame, queues it on the IOStream and makes a Future for every client,
which is what ``app.py``'s ``send_to_all`` avoids.

``/stats`` reports what ``app.py``'s does for the benchmark (``clients``, ``ticks``,
``ticks_sent``, ``fanout_ms``: the last 100 fan-out durations), and ``gc_ms``: how much of each
fan-out went to the cyclic garbage collector, which all those Futures wake. It takes the same
command line:
``--port``, ``--interval``, ``--max_clients`` and ``--ping_interval``.

Left out on purpose: everything else in ``app.py`` (Id checks, origins, slow clients, shutdown).
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import gc
import math
import threading
import time
from typing import Any

import tornado.ioloop
import tornado.options
import tornado.web
import tornado.websocket
from tornado.options import define, options

define("port", default=8888, help="run on the given port", type=int)
define("interval", default=1.0, help="seconds between ticks", type=float)
define("max_clients", default=10_000, help="connections served at once", type=int)
define("ping_interval", default=0.0, help="seconds between keep-alive pings", type=float)

clients: dict[str, dict[str, Any]] = {}
stats: dict[str, Any] = {
    "ticks": 0,
    "ticks_sent": 0,
    "ticks_skipped_slow": 0,
    "fanout_ms": collections.deque(maxlen=100),
    "gc_ms": collections.deque(maxlen=100),
}


class GcClock:
    """Total seconds spent in the cyclic garbage collector, kept by a ``gc.callbacks`` entry."""

    def __init__(self) -> None:
        self.total = 0.0
        self.started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.total += time.perf_counter() - self.started


gc_clock = GcClock()
gc.callbacks.append(gc_clock)


class StatsHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        lists = {name: list(stats[name]) for name in ("fanout_ms", "gc_ms")}
        self.write({**stats, **lists, "clients": len(clients)})


class MyWebSocketHandler(tornado.websocket.WebSocketHandler):
    def open(self) -> None:
        self.client_id = self.get_argument("Id")
        clients[self.client_id] = {"id": self.client_id, "object": self}

    def on_close(self) -> None:
        clients.pop(self.client_id, None)


def send_to_all(text: str) -> None:
    """Write the tick to each client in turn. Runs on the IOLoop's thread."""
    started = time.perf_counter()
    gc_before = gc_clock.total
    sent = 0
    for entry in list(clients.values()):
        try:
            entry["object"].write_message(text)
            sent += 1
        except tornado.websocket.WebSocketClosedError:
            pass
    stats["ticks"] += 1
    stats["ticks_sent"] += sent
    stats["fanout_ms"].append((time.perf_counter() - started) * 1000)
    stats["gc_ms"].append((gc_clock.total - gc_before) * 1000)


class SendThread(threading.Thread):
    """Wake at every multiple of ``interval`` on the wall clock and hand the time to the loop."""

    def __init__(self, io_loop: tornado.ioloop.IOLoop, interval: float) -> None:
        super().__init__(name="SendThread", daemon=True)
        self.io_loop = io_loop
        self.interval = interval

    def run(self) -> None:
        tick = math.floor(time.time() / self.interval) + 1
        while True:
            delay = tick * self.interval - time.time()
            if delay > 0:
                time.sleep(delay)
                continue
            self.io_loop.add_callback(send_to_all, str(datetime.datetime.now()))
            tick += 1


async def serve() -> None:
    app = tornado.web.Application(
        [(r"/websocket", MyWebSocketHandler), (r"/stats", StatsHandler)],
        websocket_ping_interval=options.ping_interval or None,
    )
    app.listen(options.port, "127.0.0.1")
    SendThread(tornado.ioloop.IOLoop.current(), options.interval).start()
    await asyncio.Event().wait()  # until the benchmark ends the process


if __name__ == "__main__":
    tornado.options.parse_command_line()
    asyncio.run(serve())
