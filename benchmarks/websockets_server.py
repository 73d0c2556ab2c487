"""The pure-Python peer of the fan-out benchmark: python-websockets' ``broadcast()``.

One asyncio task wakes at the turn of every interval on the wall clock, as ``app.py``'s
``SendThread`` does, and sends ``str(datetime.datetime.now())`` to every open connection with
``websockets.asyncio.server.broadcast``, which writes each connection's frame without waiting.

``/stats`` answers what ``app.py``'s does for the benchmark (``clients``, ``ticks``,
``ticks_sent``, ``fanout_ms``: the last 100 fan-out durations). The command line takes the names
``app.py`` takes: ``--port``, ``--interval``, ``--max_clients``, ``--ping_interval`` (0 is off)
and, ignored, Tornado's ``--logging``.

Left out on purpose: Ids, origins, slow clients, a graceful shutdown.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime
import http
import json
import logging
import math
import time
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.http11 import Request, Response

connections: set[ServerConnection] = set()
stats: dict[str, Any] = {
    "ticks": 0,
    "ticks_sent": 0,
    "ticks_skipped_slow": 0,
    "fanout_ms": collections.deque(maxlen=100),
}


async def handler(connection: ServerConnection) -> None:
    connections.add(connection)
    try:
        await connection.wait_closed()
    finally:
        connections.discard(connection)


def make_request_hook(max_clients: int):
    """Answer /stats over plain HTTP and refuse connections past ``max_clients``."""

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        if request.path == "/stats":
            body = {**stats, "clients": len(connections), "fanout_ms": list(stats["fanout_ms"])}
            return connection.respond(http.HTTPStatus.OK, json.dumps(body))
        if len(connections) >= max_clients:
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "Server full\n")
        return None

    return process_request


def send_to_all(text: str) -> None:
    started = time.perf_counter()
    broadcast(connections, text)
    stats["ticks"] += 1
    stats["ticks_sent"] += len(connections)
    stats["fanout_ms"].append((time.perf_counter() - started) * 1000)


async def tick_forever(interval: float) -> None:
    """Send the time at every multiple of ``interval`` on the wall clock."""
    tick = math.floor(time.time() / interval) + 1
    while True:
        delay = tick * interval - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
            continue
        # Woken more than an interval late: send the current time once, as app.py does.
        tick += math.floor(-delay / interval)
        send_to_all(str(datetime.datetime.now()))
        tick += 1


async def main(args: argparse.Namespace) -> None:
    async with serve(
        handler,
        "127.0.0.1",
        args.port,
        process_request=make_request_hook(args.max_clients),
        ping_interval=args.ping_interval or None,
        compression=None,
    ):
        await tick_forever(args.interval)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8888)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--max_clients", type=int, default=10_000)
    parser.add_argument("--ping_interval", type=float, default=20.0)
    parser.add_argument("--logging", default="warning")
    return parser.parse_args()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(parse_args()))
