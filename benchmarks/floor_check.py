"""Is the floor a floor? The simplest fan-out loop beside floor_server.py's, on the same sockets.

This process, pinned to CPU 0, is a ``floor_server.FloorServer`` that accepts ``--clients``
connections from ``loadgen.py`` processes pinned to CPU 1, as in ``fanout.py``. Then, at each of
``--ticks`` ticks, it sends every socket one frame twice, half an interval apart, once with each
of two loops, taking turns at going first:

- ``bare``: ``for sock in socks: sock.send(frame)``, the least a Python loop can do;
- ``floor``: ``FloorServer.send_to_all``, the floor server's own loop.

If the floor is a floor, the two take the same time. It writes, to a JSON file, the time per
send of each (median over the ticks) and the ratio floor/bare (median, min and max over the
ticks), in wall time and in CPU time.

    python benchmarks/floor_check.py --clients 10000
"""

from __future__ import annotations

import datetime
import json
import statistics
import time
from pathlib import Path

import checks
import floor_server

RESULTS = Path(__file__).resolve().parent / "results" / "floor-check.json"


def main() -> None:
    args = checks.setup(__doc__, ticks=20, interval=0.5, results=RESULTS)
    floor = floor_server.FloorServer(0, args.interval)
    generators = checks.start_clients(floor.listener.getsockname()[1], args)
    try:
        deadline = time.monotonic() + generators.connect_seconds
        while len(floor.clients) < args.clients and time.monotonic() < deadline:
            floor.handle_events(0.1)
        generators.read("connected")
        socks = list(floor.clients)
        # Wall time, as fanout.py's figures, and this thread's CPU time, which other
        # processes on a shared machine do not stretch.
        times = {f"{name}_{clock}": [] for name in ("bare", "floor") for clock in ("wall", "cpu")}
        for tick in range(args.ticks):
            for name in ("bare", "floor") if tick % 2 == 0 else ("floor", "bare"):
                floor.handle_events(args.interval / 2)  # the clients read the last frame
                text = str(datetime.datetime.now())
                wall, cpu = time.perf_counter(), time.thread_time()
                if name == "bare":
                    frame = floor_server.text_frame(text)
                    for sock in socks:
                        sock.send(frame)
                else:
                    floor.send_to_all(text)
                times[f"{name}_cpu"].append((time.thread_time() - cpu) * 1000)
                times[f"{name}_wall"].append((time.perf_counter() - wall) * 1000)
    finally:
        generators.stop()
    result: dict[str, object] = {"clients": len(socks), "ticks": args.ticks}
    for clock in ("wall", "cpu"):
        for name in ("bare", "floor"):
            per_send = statistics.median(times[f"{name}_{clock}"]) * 1000 / len(socks)
            result[f"{name}_{clock}_us_per_send"] = round(per_send, 2)
        result[f"floor/bare_{clock}"] = checks.ratio_range(
            times[f"floor_{clock}"], times[f"bare_{clock}"]
        )
    args.json.write_text(json.dumps({**result, "ms": times}, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
