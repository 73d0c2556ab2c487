"""The tick's loop alone: app.py's ``write_to_all`` beside a bare send() loop, on one process.

``fanout.py`` measures whole servers, each in its own run, on a machine whose load drifts. This
script takes the rest of the machine out: one process, pinned to CPU 0, runs ``app.py``'s
application (no SendThread) and takes ``--clients`` connections from ``loadgen.py`` processes
pinned to CPU 1. Then, at each of ``--ticks`` ticks, it sends every client one frame with each
of three loops, in an order that rotates from tick to tick, half an interval apart:

- ``app``: ``app.write_to_all``, the loop every tick goes through;
- ``calls``: the loop as ``app.py`` had it before it read attributes of Tornado's objects,
  calling ``is_closing()``, ``writing()`` and ``write_to_fd()`` instead;
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

RESULTS = Path(__file__).resolve().parent / "results" / "loop-check.json"


def write_with_calls(frame: bytes) -> int:
    """``app.write_to_all`` as it was with Tornado's public methods (commit 426180e)."""
    view = memoryview(frame)
    now = time.monotonic()
    sent = 0
    for connection, stream, _ in list(app.targets.values()):
        if connection.is_closing():
            continue
        if stream.writing():
            sent += connection.handler.send_frame(frame, now)
        else:
            sent += write_frame_to_fd(stream, view)
    return sent


def write_frame_to_fd(stream: Any, frame: memoryview) -> bool:
    try:
        written = stream.write_to_fd(frame)
    except BlockingIOError:
        written = 0
    except OSError:
        stream.close()
        return False
    if written < len(frame):
        stream.write(frame[written:])
    return True


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
        socks = [sock for _, _, sock in app.targets.values()]
        loops = {
            "app": app.write_to_all,
            "calls": write_with_calls,
            "bare": lambda frame: write_bare(frame, socks),
        }
        cpu_ms: dict[str, list[float]] = {name: [] for name in loops}
        order = list(loops)
        for _ in range(args.ticks):
            order = order[1:] + order[:1]
            for name in order:
                await asyncio.sleep(args.interval / len(loops))  # the clients read the last one
                frame = app.encode_text_frame(str(datetime.datetime.now()))
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
    for name, other in (("app", "bare"), ("calls", "bare"), ("app", "calls")):
        result[f"{name}/{other}"] = checks.ratio_range(cpu_ms[name], cpu_ms[other])
    return {**result, "cpu_ms": cpu_ms}


def main() -> None:
    args = checks.setup(__doc__, ticks=40, interval=0.3, results=RESULTS)
    result = asyncio.run(measure(args))
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({key: value for key, value in result.items() if key != "cpu_ms"}))


if __name__ == "__main__":
    main()
