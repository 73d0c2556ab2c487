"""Is the floor a floor? The simplest fan-out loop beside floor_server.py's, on the same sockets.

This process, pinned to CPU 0, is a ``floor_server.FloorServer`` that accepts ``--clients``
connections from ``loadgen.py`` processes pinned to CPU 1, as in ``fanout.py``. Then, at each of
``--ticks`` ticks, it sends every socket one frame twice, half an interval apart, once with each
of two loops, taking turns at going first:

- ``bare``: ``for sock in socks: sock.send(frame)``, the least a Python loop can do;
- ``floor``: ``FloorServer.send_to_all``, the floor server's own loop.

If the floor is a floor, the two take the same time. It writes, to a JSON file, the time per
send of each (median over the ticks) and the ratio floor/bare, tick by tick and their median.

    python benchmarks/floor_check.py --clients 10000
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import time
from pathlib import Path

import floor_server
from loadgen import LoadGenerators, raise_file_limit

RESULTS = Path(__file__).resolve().parent / "results" / "floor-check.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between ticks")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    raise_file_limit()
    floor = floor_server.FloorServer(0, args.interval)
    port = floor.listener.getsockname()[1]
    generators = LoadGenerators(
        port,
        args.clients,
        interval=args.interval,
        rate=2000,
        per_process=5000,
        max_seconds=300,
        cpu=1,
    )
    try:
        deadline = time.monotonic() + generators.connect_seconds
        while len(floor.clients) < args.clients and time.monotonic() < deadline:
            floor.handle_events(0.1)
        generators.read("connected")
        socks = list(floor.clients)
        times: dict[str, list[float]] = {"bare": [], "floor": []}
        for tick in range(args.ticks):
            for name in ("bare", "floor") if tick % 2 == 0 else ("floor", "bare"):
                floor.handle_events(args.interval / 2)  # the clients read the last frame
                text = str(datetime.datetime.now())
                started = time.perf_counter()
                if name == "bare":
                    frame = floor_server.text_frame(text)
                    for sock in socks:
                        sock.send(frame)
                else:
                    floor.send_to_all(text)
                times[name].append((time.perf_counter() - started) * 1000)
    finally:
        generators.stop()
    ratios = [f / b for f, b in zip(times["floor"], times["bare"])]
    result = {
        "clients": len(socks),
        "ticks": args.ticks,
        **{
            f"{name}_us_per_send": round(statistics.median(ms) * 1000 / len(socks), 2)
            for name, ms in times.items()
        },
        "floor/bare": {
            "median": round(statistics.median(ratios), 3),
            "min": round(min(ratios), 3),
            "max": round(max(ratios), 3),
        },
        "ms": times,
    }
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "ms"}))


if __name__ == "__main__":
    main()
