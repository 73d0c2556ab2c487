"""How on time are the pushes as the number of clients grows? (GitHub issue 5)

For each number of clients, and on the same client load, this runs four servers one after the
other, each in its own process pinned to CPU 0:

- ``app``: this project's ``app.py``;
- ``naive``: ``naive_server.py``, the article's loop made thread-safe (``write_message`` to each
  client in turn), the baseline;
- ``websockets``: ``websockets_server.py``, python-websockets' ``broadcast()``, the peer;
- ``floor``: ``floor_server.py``, one bare ``send()`` per socket: the best one core can do.

The clients come from ``loadgen.py`` processes pinned to CPU 1. For each run it reports:

- fan-out per tick: the server's own time to write one tick to every client (``/stats``);
- delivery lag p50/p99/max: kernel receive time of the tick at the client minus the turn of the
  interval it belongs to; and missed ticks (a client without a tick by the end of the run);
- server CPU per tick: utime + stime from ``/proc/PID/stat`` over the measured ticks;
- RSS per connection: (VmRSS with the clients connected - VmRSS with none) / clients;
- idle CPU: the server's CPU per second over a few seconds with no client;
- what else ran: the CPU other processes took meanwhile, since a shared machine disturbs the
  figures (a disturbed run is tried again, and the least disturbed try kept).

It prints a table, and writes the raw results (JSON) and a chart of lag against clients (PNG).
``--quick`` runs a small version in seconds, as a smoke test.

    python benchmarks/fanout.py            # 1,000 to 20,000 clients, 10 ticks of 1 s
    python benchmarks/fanout.py --quick    # 200 and 1,000 clients, 3 ticks of 0.2 s
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import queue
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "benchmarks"
SERVERS = {
    "app": ROOT / "app.py",
    "naive": HERE / "naive_server.py",
    "websockets": HERE / "websockets_server.py",
    "floor": HERE / "floor_server.py",
}
SERVER_CPU, LOADGEN_CPU = 0, 1
# Files a server needs besides its clients' sockets: the listener, epoll, pipes, logs.
SERVER_SPARE_FILES = 100
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# Goals from the issue, drawn on the chart.
GOAL_LAG_P99_MS = 100
GOAL_FANOUT_MS = 50


# Reading a process from /proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads, in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of the man page; the list starts at field 3.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def run_time_seconds(pid: int) -> float:
    """CPU time of all a process's threads to the microsecond, from the scheduler.

    ``/proc/PID/stat`` counts in clock ticks (10 ms): too coarse for an idle server. This reads
    ``se.sum_exec_runtime`` (milliseconds) from ``/proc/PID/task/*/sched``, and falls back on
    ``cpu_seconds`` where the kernel does not have that file.
    """
    total_ms = 0.0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/sched") as sched:
                for line in sched:
                    if line.startswith("se.sum_exec_runtime"):
                        total_ms += float(line.split(":")[1])
    except FileNotFoundError:
        return cpu_seconds(pid)
    return total_ms / 1000


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS, and its anonymous part (the heap: RssAnon), from /proc/PID/status, in KB."""
    found = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon"):
                found[name] = int(value.split()[0])
    return found


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, stolen) CPU seconds of the whole machine, all cores, from /proc/stat."""
    with open("/proc/stat") as stat:
        user, nice, system, _, _, _, _, steal = map(int, stat.readline().split()[1:9])
    return (user + nice + system) / CLOCK_TICKS, steal / CLOCK_TICKS


def wait_for_quiet_machine(most_cores: float, timeout: float) -> float:
    """Wait until other processes use less than ``most_cores``; return what they used last."""
    deadline = time.monotonic() + timeout
    while True:
        busy_before = machine_cpu_seconds()[0]
        time.sleep(1.0)
        load = machine_cpu_seconds()[0] - busy_before
        if load < most_cores or time.monotonic() > deadline:
            return load


def file_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def raise_file_limit() -> None:
    """Lift the soft limit on open files to the hard one (runs in the child, before exec)."""
    hard = file_limit()
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# Small helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def sleep_until(wall_time: float) -> None:
    delay = wall_time - time.time()
    if delay > 0:
        time.sleep(delay)


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def median(values: list[float]) -> float:
    return percentile(sorted(values), 0.5)


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def rounded(value: float, digits: int = 2) -> float | None:
    """``value`` rounded, or None (null in JSON, "-" in the table) if it is not a number."""
    return None if math.isnan(value) else round(value, digits)


# The processes


class Server:
    """One server under test, in a child process pinned to SERVER_CPU."""

    def __init__(self, kind: str, max_clients: int, interval: float, log_dir: Path) -> None:
        self.kind = kind
        self.port = free_port()
        self.log_path = log_dir / f"{kind}-{self.port}.log"
        command = [
            sys.executable,
            str(SERVERS[kind]),
            f"--port={self.port}",
            f"--max_clients={max_clients}",
            f"--interval={interval}",
            "--ping_interval=0",
            "--logging=warning",
        ]
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                preexec_fn=self.prepare_child,
            )
        self.pid = self.process.pid
        if not wait_until(self.answers, timeout=20):
            self.stop()
            raise RuntimeError(f"{kind} server did not start:\n{self.log_tail()}")

    @staticmethod
    def prepare_child() -> None:
        os.sched_setaffinity(0, {SERVER_CPU})
        raise_file_limit()

    def stats(self, timeout: float = 30.0) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/stats"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.load(response)

    def answers(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.kind} server exited:\n{self.log_tail()}")
        try:
            self.stats(timeout=1.0)
        except OSError:
            return False
        return True

    def log_tail(self) -> str:
        return self.log_path.read_text()[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


class LoadGenerators:
    """``loadgen.py`` processes pinned to LOADGEN_CPU, sharing the clients and the rate."""

    def __init__(self, port: int, clients: int, args: argparse.Namespace) -> None:
        count = math.ceil(clients / args.clients_per_loadgen)
        shares = [clients // count + (i < clients % count) for i in range(count)]
        # Twice the time the rate allows, and some: a server that cannot keep up is left with
        # the clients it took by then.
        self.connect_seconds = clients / args.rate * 2 + 20
        self.events: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        self.processes = [
            self.start(i, port, share, args.rate / count, args) for i, share in enumerate(shares)
        ]

    def start(
        self, index: int, port: int, clients: int, rate: float, args: argparse.Namespace
    ) -> subprocess.Popen[str]:
        command = [
            sys.executable,
            str(HERE / "loadgen.py"),
            f"--port={port}",
            f"--clients={clients}",
            f"--interval={args.interval}",
            f"--rate={rate}",
            f"--id-prefix=g{index}",
            f"--connect-seconds={self.connect_seconds}",
            f"--max-seconds={args.loadgen_max_seconds}",
            f"--cpu={LOADGEN_CPU}",
        ]
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        threading.Thread(target=self.read_events, args=(index, process), daemon=True).start()
        return process

    def read_events(self, index: int, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.events.put((index, json.loads(line)))

    def collect(self, event: str, timeout: float) -> list[dict[str, Any]]:
        """Wait for ``event`` from every generator, in the order of the generators."""
        found: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while len(found) < len(self.processes):
            try:
                index, message = self.events.get(timeout=max(0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"load generators did not all send {event!r}") from None
            if message["event"] == event:
                found[index] = message
        return [found[i] for i in range(len(self.processes))]

    def send(self, command: str) -> None:
        for process in self.processes:
            if process.poll() is None:
                assert process.stdin is not None
                process.stdin.write(command + "\n")
                process.stdin.flush()

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(process.pid) for process in self.processes)

    def stop(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self.send("quit")
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


# One run: one server, one number of clients


def measure_idle(server: Server, seconds: float) -> dict[str, Any]:
    """The server's CPU per second of wall time and its RSS, with no client."""
    time.sleep(seconds / 2)  # let the start-up settle
    before = run_time_seconds(server.pid)
    time.sleep(seconds)
    return {
        "idle_cpu_ms_per_s": round((run_time_seconds(server.pid) - before) * 1000 / seconds, 3),
        **{f"idle_{name}_kb": kb for name, kb in memory_kb(server.pid).items()},
    }


def connect_clients(
    server: Server, generators: LoadGenerators, clients: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Wait for the load generators to connect, then read the server's RSS."""
    connected = generators.collect("connected", timeout=generators.connect_seconds + 30)
    opened = sum(message["open"] for message in connected)
    wait_until(lambda: server.stats()["clients"] >= opened, timeout=30, step=0.2)
    time.sleep(args.interval * 1.5)  # at least one tick to every client before RSS is read
    return {
        "clients": opened,
        "failed_connections": merge_counts(message["failed"] for message in connected),
        "connect_seconds": max(message["seconds"] for message in connected),
        "loadgen_processes": len(connected),
        **{f"{name}_kb": kb for name, kb in memory_kb(server.pid).items()},
    }


def measured_window(interval: float, ticks: int) -> tuple[int, int]:
    """Tick numbers (boundary / interval) of the next ``ticks`` ticks, starting a bit ahead."""
    first = math.floor(time.time() / interval) + 2
    return first, first + ticks - 1


def measure_ticks(
    server: Server, generators: LoadGenerators, clients: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Fan-out, CPU and lag over ``args.ticks`` ticks, read half an interval either side."""
    first, last = measured_window(args.interval, args.ticks)
    sleep_until((first - 0.5) * args.interval)
    stats_before = server.stats()
    cpu_before = cpu_seconds(server.pid), generators.cpu_seconds(), *machine_cpu_seconds()
    sleep_until((last + 0.5) * args.interval)
    cpu_after = cpu_seconds(server.pid), generators.cpu_seconds(), *machine_cpu_seconds()
    stats_after = server.stats()
    sleep_until(last * args.interval + args.grace)
    generators.send(f"report {first} {last}")
    reports = generators.collect("report", timeout=60)
    return {
        **cpu_figures(cpu_before, cpu_after, args.ticks),
        **fanout_figures(stats_before, stats_after, clients),
        **lag_figures(reports, clients, first, last),
    }


def run_one(kind: str, clients: int, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """Start one server, connect the clients, measure, and stop everything."""
    server = Server(kind, clients + SERVER_SPARE_FILES, args.interval, log_dir)
    generators = None
    try:
        idle = measure_idle(server, args.idle_seconds)
        generators = LoadGenerators(server.port, clients, args)
        connected = connect_clients(server, generators, clients, args)
        measured = measure_ticks(server, generators, connected["clients"], args)
    finally:
        if generators is not None:
            generators.stop()
        server.stop()
    per_client = {
        f"{name}_per_client_kb": round(
            (connected[f"{name}_kb"] - idle[f"idle_{name}_kb"]) / max(connected["clients"], 1), 2
        )
        for name in ("VmRSS", "RssAnon")
    }
    return {"server": kind, "clients_asked": clients, **idle, **connected, **per_client, **measured}


def cpu_figures(
    before: tuple[float, ...], after: tuple[float, ...], ticks: int
) -> dict[str, float]:
    """CPU per tick of the server, the load generators, and everything else on the machine."""
    server, loadgen, machine_busy, stolen = (
        (end - start) * 1000 / ticks for start, end in zip(before, after)
    )
    return {
        "server_cpu_ms_per_tick": round(server, 1),
        "loadgen_cpu_ms_per_tick": round(loadgen, 1),
        # Other processes (and interrupt work the kernel did not charge to a process).
        "other_cpu_ms_per_tick": round(max(0.0, machine_busy - server - loadgen), 1),
        "stolen_cpu_ms_per_tick": round(stolen, 1),
    }


def merge_counts(counts: Any) -> dict[str, int]:
    merged: dict[str, int] = {}
    for count in counts:
        for key, value in count.items():
            merged[key] = merged.get(key, 0) + value
    return merged


def fanout_figures(before: dict[str, Any], after: dict[str, Any], clients: int) -> dict[str, Any]:
    """The fan-out durations of the ticks the server finished between the two readings."""
    ticks = after["ticks"] - before["ticks"]
    fanout_ms = after["fanout_ms"][-ticks:] if ticks > 0 else []
    # Only the naive server says how much of each fan-out went to the cyclic GC.
    gc_ms = after.get("gc_ms", [])[-ticks:] if ticks > 0 else None
    return {
        "server_ticks": ticks,
        "fanout_ms": fanout_ms,
        "fanout_ms_mean": rounded(mean(fanout_ms)),
        "fanout_ms_median": rounded(median(fanout_ms)),
        "fanout_ms_max": rounded(max(fanout_ms, default=math.nan)),
        "fanout_us_per_client": rounded(mean(fanout_ms) * 1000 / max(clients, 1)),
        "gc_ms": gc_ms,
        "gc_ms_mean": rounded(mean(gc_ms)) if gc_ms is not None else None,
        "skipped_slow": after["ticks_skipped_slow"] - before["ticks_skipped_slow"],
        "skipped_late": after.get("ticks_skipped_late", 0) - before.get("ticks_skipped_late", 0),
    }


def lag_figures(
    reports: list[dict[str, Any]], clients: int, first: int, last: int
) -> dict[str, Any]:
    """Lag percentiles over every (client, tick) and per tick, and the ticks never received."""
    all_lags: list[float] = []
    all_delays: list[float] = []
    per_tick = []
    for tick in range(first, last + 1):
        lags = sorted(lag / 1000 for r in reports for lag in r["ticks"][str(tick)]["lags_us"])
        all_lags.extend(lags)
        all_delays.extend(d / 1000 for r in reports for d in r["ticks"][str(tick)]["delays_us"])
        per_tick.append(
            {
                "tick": tick,
                "received": len(lags),
                "lag_ms_p50": rounded(percentile(lags, 0.5)),
                "lag_ms_p99": rounded(percentile(lags, 0.99)),
                "lag_ms_max": rounded(max(lags, default=math.nan)),
            }
        )
    all_lags.sort()
    all_delays.sort()
    return {
        "ticks": last - first + 1,
        "lag_ms_p50": rounded(percentile(all_lags, 0.5)),
        "lag_ms_p99": rounded(percentile(all_lags, 0.99)),
        "lag_ms_max": rounded(max(all_lags, default=math.nan)),
        "missed_ticks": sum(max(0, clients - tick["received"]) for tick in per_tick),
        "closed_by_server": sum(r["closed_by_server"] for r in reports),
        "read_delay_ms_p99": rounded(percentile(all_delays, 0.99)),
        "per_tick": per_tick,
    }


# Output


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "tornado": package_version("tornado"),
        "websockets": package_version("websockets"),
        "file_limit": file_limit(),
    }


COLUMNS = [
    # (heading, key, format)
    ("server", "server", "{}"),
    ("clients", "clients", "{:,}"),
    ("fan-out ms", "fanout_ms_mean", "{:.1f}"),
    ("max", "fanout_ms_max", "{:.1f}"),
    ("µs/client", "fanout_us_per_client", "{:.1f}"),
    ("lag p50", "lag_ms_p50", "{:.1f}"),
    ("p99", "lag_ms_p99", "{:.1f}"),
    ("max", "lag_ms_max", "{:.1f}"),
    ("missed", "missed_ticks", "{:,}"),
    ("GC ms", "gc_ms_mean", "{:.0f}"),
    ("CPU ms/tick", "server_cpu_ms_per_tick", "{:.0f}"),
    ("KB/conn", "VmRSS_per_client_kb", "{:.1f}"),
    ("idle CPU ms/s", "idle_cpu_ms_per_s", "{:.2f}"),
    ("loadgen CPU ms/tick", "loadgen_cpu_ms_per_tick", "{:.0f}"),
    ("read delay p99", "read_delay_ms_p99", "{:.1f}"),
    ("other CPU ms/tick", "other_cpu_ms_per_tick", "{:.0f}"),
]


def table_row(run: dict[str, Any]) -> list[str]:
    if "error" in run:
        return [run["server"], f"{run['clients_asked']:,}", f"failed: {run['error']}"]
    cells = ["-" if run.get(key) is None else form.format(run[key]) for _, key, form in COLUMNS]
    if run["clients"] < run["clients_asked"]:
        cells[1] += f" of {run['clients_asked']:,}"
    return cells


def table(runs: list[dict[str, Any]]) -> str:
    """A Markdown table, readable as plain text too; a failed run fills only its first cells."""
    rows = [[heading for heading, _, _ in COLUMNS]] + [table_row(run) for run in runs]
    rows = [row + [""] * (len(COLUMNS) - len(row)) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["| " + " | ".join(c.rjust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], path: Path, title: str) -> None:
    """Lag p99 (solid) and p50 (dashed), and fan-out time, against clients, one line a server."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot, ticker

    figure, (lag_axes, fanout_axes) = pyplot.subplots(1, 2, figsize=(11, 4.5))
    runs = [run for run in runs if "error" not in run]
    for kind in dict.fromkeys(run["server"] for run in runs):
        mine = [run for run in runs if run["server"] == kind]
        clients = [run["clients"] for run in mine]
        (line,) = lag_axes.plot(clients, [r["lag_ms_p99"] for r in mine], "o-", label=f"{kind} p99")
        color = line.get_color()
        lag_axes.plot(clients, [r["lag_ms_p50"] for r in mine], "--", color=color, alpha=0.6)
        fanout_axes.plot(clients, [r["fanout_ms_mean"] for r in mine], "o-", label=kind)
    lag_axes.axhline(GOAL_LAG_P99_MS, color="grey", linestyle=":", label="goal: p99")
    fanout_axes.axhline(GOAL_FANOUT_MS, color="grey", linestyle=":", label="goal")
    lag_axes.set(title="Delivery lag: p99 (solid), p50 (dashed)", ylabel="ms after the tick's turn")
    fanout_axes.set(title="Fan-out time per tick (mean)", ylabel="ms")
    for axes in (lag_axes, fanout_axes):
        axes.set(xlabel="clients", yscale="log")
        axes.xaxis.set_major_formatter(ticker.StrMethodFormatter("{x:,.0f}"))
        axes.yaxis.set_major_formatter(ticker.StrMethodFormatter("{x:,.0f}"))
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize="small")
    figure.suptitle(title, fontsize="medium")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


# The command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a small run for a smoke test")
    parser.add_argument("--clients", help="comma-separated client counts (1000,5000,...)")
    parser.add_argument("--servers", help=f"comma-separated, from {', '.join(SERVERS)}")
    parser.add_argument("--ticks", type=int, help="ticks measured per run")
    parser.add_argument("--interval", type=float, help="seconds between ticks")
    parser.add_argument("--idle-seconds", type=float, help="idle CPU measured over this")
    parser.add_argument("--grace", type=float, help="seconds after the last tick to wait for it")
    parser.add_argument("--rate", type=float, default=2000, help="connections per second")
    parser.add_argument("--clients-per-loadgen", type=int, default=5000)
    parser.add_argument("--loadgen-max-seconds", type=float, default=240)
    parser.add_argument(
        "--quiet-below",
        type=float,
        default=0.1,
        help="before each run, wait until other processes use fewer cores than this",
    )
    parser.add_argument("--quiet-timeout", type=float, help="but no longer than this")
    parser.add_argument(
        "--retries",
        type=int,
        help="run again, up to this many times, if other processes used more than --quiet-below",
    )
    parser.add_argument("--json", type=Path, help="where the raw results go")
    parser.add_argument("--chart", type=Path, help="where the PNG chart goes")
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.clients = [int(n) for n in str(args.clients).split(",")]
    args.servers = args.servers.split(",")
    return args


FULL = {
    "clients": "1000,5000,10000,20000",
    "servers": ",".join(SERVERS),
    "ticks": 10,
    "interval": 1.0,
    "idle_seconds": 2.0,
    "grace": 3.0,
    "quiet_timeout": 60.0,
    "retries": 2,
    "json": HERE / "results" / "fanout.json",
    "chart": ROOT / "docs" / "fanout-lag.png",
}
QUICK = {
    **FULL,
    "clients": "200,1000",
    "ticks": 3,
    "interval": 0.2,
    "idle_seconds": 0.5,
    "grace": 0.5,
    "quiet_timeout": 2.0,
    "retries": 0,
    "json": Path(tempfile.gettempdir()) / "fanout-quick.json",
    "chart": Path(tempfile.gettempdir()) / "fanout-quick.png",
}


def client_counts(wanted: list[int]) -> list[int]:
    """Cap each count at what one server process may open, and say so."""
    most = file_limit() - SERVER_SPARE_FILES
    for n in wanted:
        if n > most:
            print(
                f"note: {n:,} clients asked, {most:,} run: a process may open {file_limit():,}"
                " files",
                file=sys.stderr,
            )
    return [min(n, most) for n in wanted]


def other_cores(run: dict[str, Any], interval: float) -> float:
    """How many cores other processes kept busy during a run's measured ticks."""
    return run.get("other_cpu_ms_per_tick", 0) / 1000 / interval


def run_quietly(kind: str, clients: int, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """``run_one``, again up to ``args.retries`` times while other processes disturb it.

    The machine may be shared: each try waits for a quiet moment first, and of the tries the one
    least disturbed is kept. A run that fails is kept as ``{"error": ...}``.
    """
    tries = []
    for attempt in range(1, args.retries + 2):
        load = wait_for_quiet_machine(args.quiet_below, args.quiet_timeout)
        print(
            f"{kind}, {clients:,} clients, try {attempt} (other load before: {load:.2f} cores)",
            file=sys.stderr,
            flush=True,
        )
        try:
            run = run_one(kind, clients, args, log_dir)
        except (OSError, RuntimeError, TimeoutError) as error:
            print(f"  failed: {error}", file=sys.stderr)
            return {"server": kind, "clients_asked": clients, "error": str(error)}
        tries.append(run)
        if other_cores(run, args.interval) <= args.quiet_below:
            break
        print(f"  disturbed: {other_cores(run, args.interval):.2f} cores", file=sys.stderr)
    best = min(tries, key=lambda run: other_cores(run, args.interval))
    return {**best, "tries": len(tries)}


def run_all(args: argparse.Namespace, about: dict[str, Any]) -> list[dict[str, Any]]:
    """Every server for every client count, the results saved after each run."""
    runs: list[dict[str, Any]] = []
    settings = {k: v for k, v in vars(args).items() if k not in ("json", "chart")}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fanout-") as log_dir:
        for clients in client_counts(args.clients):
            for kind in args.servers:
                runs.append(run_quietly(kind, clients, args, Path(log_dir)))
                results = {"machine": about, "settings": settings, "runs": runs}
                args.json.write_text(json.dumps(results, indent=1) + "\n")
    return runs


def check_dependencies(servers: list[str]) -> None:
    """Stop before any run, rather than after all of them, if a package is missing."""
    needed = ["matplotlib"] + (["websockets"] if "websockets" in servers else [])
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: pip install -e '.[bench]'")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_dependencies(args.servers)
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {LOADGEN_CPU})  # keep this process off the server's CPU
    raise_file_limit()
    about = machine()
    setup = (
        f"{about['cpu']}, {about['cores']} cores, Python {about['python']}, "
        f"Tornado {about['tornado']}, websockets {about['websockets']}: "
        f"{args.ticks} ticks of {args.interval} s"
    )
    print(f"{setup}; Linux {about['kernel']}", file=sys.stderr)
    runs = run_all(args, about)
    print(table(runs))
    plot(runs, args.chart, setup)
    print(f"results: {args.json}\nchart: {args.chart}", file=sys.stderr)


if __name__ == "__main__":
    main()
