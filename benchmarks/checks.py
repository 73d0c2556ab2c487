"""What ``floor_check.py`` and ``loop_check.py`` share: the command line, the clients, the ratios.

Each check runs two or more fan-out loops in one process pinned to CPU 0, over the same
connections from ``loadgen.py`` processes pinned to CPU 1, and divides their times tick by tick.
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Sequence
from pathlib import Path

from loadgen import LoadGenerators, raise_file_limit


def setup(doc: str, *, ticks: int, interval: float, results: Path) -> argparse.Namespace:
    """Read the command line, pin this process to CPU 0 and let it open enough files."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=ticks)
    parser.add_argument("--interval", type=float, default=interval, help="seconds between ticks")
    parser.add_argument("--json", type=Path, default=results)
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    raise_file_limit()
    return args


def start_clients(port: int, args: argparse.Namespace) -> LoadGenerators:
    """``--clients`` connections to ``port``, at fanout.py's rate, from CPU 1."""
    return LoadGenerators(
        port,
        args.clients,
        interval=args.interval,
        rate=2000,
        per_process=5000,
        max_seconds=300,
        cpu=1,
    )


def ratio_range(numerators: Sequence[float], denominators: Sequence[float]) -> dict[str, float]:
    """The tick-by-tick ratios' median, lowest and highest."""
    ratios = [a / b for a, b in zip(numerators, denominators)]
    return {
        "median": round(statistics.median(ratios), 3),
        "min": round(min(ratios), 3),
        "max": round(max(ratios), 3),
    }
