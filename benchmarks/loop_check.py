"""The tick's loop alone: the fast path and its fallback beside a bare send() loop, in one process.

``fanout.py`` measures whole servers, each in its own run, on a machine whose load drifts. This
script takes the rest of the machine out: one process, pinned to CPU 0, runs ``app.py``'s
application (no SendThread) and takes ``--clients`` connections from ``loadgen.py`` processes
pinned to CPU 1. Then, at each of ``--ticks`` ticks, it sends every client one frame with each
of three loops, in an order that rotates from tick to tick, half an interval apart:

- ``app``: ``app.targets.write_to_each``, the loop every tick goes through, reading Tornado's
  attributes (``timepush/fastpath.py``);
- ``public``: the same method after a failed start-up check, through Tornado's public API
  (``is_closing()``, ``writing()``, ``stream.write()``);
- ``bare``: ``for sock in socks: sock.send(frame)``, the least a Python loop can do.

Each loop's CPU time (this thread's, which other processes do not stretch) is divided by the
bare loop's of the same tick; the JSON file gets the medians and the ranges over the ticks.

    python benchmarks/loop_check.py --clients 10000
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import statistics
import time
from pathlib import Path
from typing import Any

import checks
import tornado.httpserver
import tornado.netutil

import app  # installed with the project: pip install -e '.[bench]'
from timepush import fastpath

RESULTS = Path(__file__).resolve().parent / "results" / "loop-check.json"


def through(internals: bool) -> Any:
    """``app.targets.write_to_each``, on the fast path or on its fallback."""

    def write(frame: bytes) -> int:
        app.targets.internals = internals
        sent, busy = app.targets.write_to_each(frame)
        return sent + len(busy)

    return write


def write_bare(frame: bytes, socks: list[Any]) -> int:
    for sock in socks:
        try:  # noqa: SIM105
            sock.send(frame)
        except BlockingIOError:
            pass
    return len(socks)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    application = app.make_app(max_clients=args.clients + 10, websocket_ping_interval=0)
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(application)
    server.add_sockets(sockets)
    generators = checks.start_clients(sockets[0].getsockname()[1], args)
    try:
        connected = await asyncio.to_thread(generators.read, "connected")
        opened = sum(message["open"] for message in connected)
        deadline = time.monotonic() + 30
        while len(app.clients) < opened and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # the server's side of the last handshakes
        socks = [sock for _, _, sock in app.targets.by_id.values()]
        loops = {
            "app": through(internals=True),
            "public": through(internals=False),
            "bare": lambda frame: write_bare(frame, socks),
        }
        cpu_ms: dict[str, list[float]] = {name: [] for name in loops}
        order = list(loops)
        for _ in range(args.ticks):
            order = order[1:] + order[:1]
            for name in order:
                await asyncio.sleep(args.interval / len(loops))  # the clients read the last one
                frame = fastpath.encode_text_frame(str(datetime.datetime.now()))
                started = time.thread_time()
                sent = loops[name](frame)
                cpu_ms[name].append((time.thread_time() - started) * 1000)
                assert sent == len(socks), f"{name} reached {sent} of {len(socks)}"
    finally:
        generators.stop()
        server.stop()
    result: dict[str, Any] = {"clients": len(socks), "ticks": args.ticks}
    for name in loops:
        result[f"{name}_cpu_us_per_client"] = round(
            statistics.median(cpu_ms[name]) * 1000 / len(socks), 2
        )
    for name, other in (("app", "bare"), ("public", "bare"), ("app", "public")):
        result[f"{name}/{other}"] = checks.ratio_range(cpu_ms[name], cpu_ms[other])
    return {**result, "cpu_ms": cpu_ms}


def main() -> None:
    args = checks.setup(__doc__, ticks=40, interval=0.3, results=RESULTS)
    result = asyncio.run(measure(args))
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({key: value for key, value in result.items() if key != "cpu_ms"}))


if __name__ == "__main__":
    main()
