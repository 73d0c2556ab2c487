"""How on time are the pushes as the number of clients grows, beside a floor and a peer?

The same load meets four servers, each in its own process pinned to CPU 0: ``app`` (this
project's ``app.py``), ``naive`` (``naive_server.py``: the article's loop made thread-safe),
``websockets`` (``websockets_server.py``: python-websockets' ``broadcast()``, the peer) and
``floor`` (``floor_server.py``: one bare ``send()`` a client, the best one core can do). The
clients come from ``loadgen.py`` processes pinned to CPU 1. A server must first let in a strict
client (python-websockets'). Each run measures the server's fan-out per tick (its ``/stats``),
the delivery lag (kernel receive time at the client minus the turn of the interval), missed
ticks, the server's CPU and memory, and the CPU the rest of the machine took meanwhile.

A shared machine drifts, and one pass per server would hand the drift to whichever server ran at
the worst moment. So the servers run in rounds, in an order that rotates from round to round,
and ``report.py`` takes each server's lag as a ratio to the floor's and to python-websockets'
within a round: the median over the rounds and the spread. Everything goes to a JSON file.

    python benchmarks/fanout.py            # 1,000 to 20,000 clients, 3 rounds of 10 ticks of 1 s
    python benchmarks/fanout.py --quick    # a smoke test in under a minute
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import math
import os
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import report
from loadgen import LoadGenerators, lag_figures, raise_file_limit, rounded

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


# Reading a process from /proc, and small helpers


def cpu_seconds(pid: int) -> float:
    """CPU time of all a process's threads, in seconds, to the nanosecond.

    ``/proc/PID/stat`` counts in clock ticks (10 ms): too coarse for an idle server.
    """
    total_ns = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        total_ns += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
    return total_ns / 1e9


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS, and its anonymous part (the heap: RssAnon), from /proc/PID/status, in KB."""
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return {name: int(fields[name].split()[0]) for name in ("VmRSS", "RssAnon")}


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, stolen) CPU seconds of the whole machine, all cores, from /proc/stat."""
    with open("/proc/stat") as stat:
        user, nice, system, _, _, _, _, steal = map(int, stat.readline().split()[1:9])
    return (user + nice + system) / CLOCK_TICKS, steal / CLOCK_TICKS


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
    time.sleep(max(0.0, wall_time - time.time()))


# The processes


class Server:
    """One server under test, in a child process pinned to SERVER_CPU."""

    def __init__(
        self, kind: str, max_clients: int, interval: float, log_dir: Path, extra: list[str]
    ) -> None:
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
            *extra,
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
        if not wait_until(self.lets_in, timeout=20):
            self.stop()
            raise RuntimeError(f"{kind} server did not start:\n{self.log_tail()}")

    @staticmethod
    def prepare_child() -> None:
        os.sched_setaffinity(0, {SERVER_CPU})
        raise_file_limit()

    def lets_in(self) -> bool:
        """Whether a strict client, which checks the accept value and the headers, gets in."""
        from websockets.sync.client import connect

        if self.process.poll() is not None:
            raise RuntimeError(f"{self.kind} server exited:\n{self.log_tail()}")
        url = f"ws://127.0.0.1:{self.port}/websocket?Id=handshake-check"
        try:
            # The floor never answers a close: do not wait for it.
            with connect(url, open_timeout=5, close_timeout=0.1):
                return True
        except OSError:
            return False  # not listening yet
        except Exception as error:
            self.stop()
            raise RuntimeError(
                f"{self.kind}: python-websockets' client refused: {error!r}"
            ) from None

    def log_tail(self) -> str:
        return self.log_path.read_text()[-3000:]

    def stats(self, timeout: float = 30.0) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/stats"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.load(response)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


# One run: one server, one number of clients


def measure_idle(server: Server, seconds: float) -> dict[str, Any]:
    """The server's CPU per second of wall time and its RSS, with no client."""
    time.sleep(seconds / 2)  # let the start-up settle
    before = cpu_seconds(server.pid)
    time.sleep(seconds)
    return {
        "idle_cpu_ms_per_s": round((cpu_seconds(server.pid) - before) * 1000 / seconds, 3),
        **{f"idle_{name}_kb": kb for name, kb in memory_kb(server.pid).items()},
    }


def connect_clients(server: Server, generators: LoadGenerators, interval: float) -> dict[str, Any]:
    """Wait for the load generators to connect, then read the server's RSS."""
    connected = generators.read("connected")
    opened = sum(message["open"] for message in connected)
    wait_until(lambda: server.stats()["clients"] >= opened, timeout=30, step=0.2)
    time.sleep(interval * 1.5)  # at least one tick to every client before RSS is read
    failed = sum(
        (collections.Counter(message["failed"]) for message in connected), collections.Counter()
    )
    return {
        "clients": opened,
        "failed_connections": dict(failed),
        "connect_seconds": max(message["seconds"] for message in connected),
        "loadgen_processes": len(connected),
        **{f"{name}_kb": kb for name, kb in memory_kb(server.pid).items()},
    }


def measure_ticks(
    server: Server, generators: LoadGenerators, clients: int, args: argparse.Namespace
) -> dict[str, Any]:
    """CPU, fan-out and lag over ``args.ticks`` ticks, read half an interval either side.

    CPU per tick: of the server, of the load generators, and of everything else on the machine.
    """
    # Tick numbers (boundary / interval) of the next ticks, starting a bit ahead.
    first = math.floor(time.time() / args.interval) + 2
    last = first + args.ticks - 1
    pids = [server.pid] + [process.pid for process in generators.processes]

    def cpu_now() -> tuple[float, ...]:
        server_cpu, *loadgen_cpu = map(cpu_seconds, pids)
        return server_cpu, sum(loadgen_cpu), *machine_cpu_seconds()

    sleep_until((first - 0.5) * args.interval)
    stats_before, cpu_before = server.stats(), cpu_now()
    sleep_until((last + 0.5) * args.interval)
    cpu_after, stats_after = cpu_now(), server.stats()
    sleep_until(last * args.interval + args.grace)
    generators.send(f"report {first} {last}")
    server_cpu, loadgen_cpu, busy, stolen = (
        (end - start) * 1000 / args.ticks for start, end in zip(cpu_before, cpu_after)
    )
    return {
        "server_cpu_ms_per_tick": round(server_cpu, 1),
        "loadgen_cpu_ms_per_tick": round(loadgen_cpu, 1),
        # Other processes (and interrupt work the kernel did not charge to a process).
        "other_cpu_ms_per_tick": round(max(0.0, busy - server_cpu - loadgen_cpu), 1),
        "stolen_cpu_ms_per_tick": round(stolen, 1),
        **fanout_figures(stats_before, stats_after, clients),
        **lag_figures(generators.read("report"), clients, first, last),
    }


def run_one(kind: str, clients: int, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """Start one server, connect the clients, measure, and stop everything."""
    extra = shlex.split(args.app_args) if kind == "app" else []
    server = Server(kind, clients + SERVER_SPARE_FILES, args.interval, log_dir, extra)
    generators = None
    try:
        idle = measure_idle(server, args.idle_seconds)
        generators = LoadGenerators(
            server.port,
            clients,
            interval=args.interval,
            rate=args.rate,
            per_process=args.clients_per_loadgen,
            max_seconds=args.loadgen_max_seconds,
            cpu=LOADGEN_CPU,
        )
        connected = connect_clients(server, generators, args.interval)
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


def fanout_figures(before: dict[str, Any], after: dict[str, Any], clients: int) -> dict[str, Any]:
    """The fan-out durations of the ticks the server finished between the two readings."""
    ticks = after["ticks"] - before["ticks"]
    fanout_ms = after["fanout_ms"][-ticks:] if ticks > 0 else []
    # Only the naive server says how much of each fan-out went to the cyclic GC.
    gc_ms = after.get("gc_ms", [])[-ticks:] if ticks > 0 else []
    fanout_mean = statistics.fmean(fanout_ms or [math.nan])
    return {
        "server_ticks": ticks,
        "fanout_ms": fanout_ms,
        "fanout_ms_mean": rounded(fanout_mean),
        "fanout_ms_median": rounded(statistics.median(fanout_ms or [math.nan])),
        "fanout_ms_max": rounded(max(fanout_ms, default=math.nan)),
        "fanout_us_per_client": rounded(fanout_mean * 1000 / max(clients, 1)),
        "gc_ms": gc_ms,
        "gc_ms_mean": rounded(statistics.fmean(gc_ms or [math.nan])),
        "skipped_slow": after["ticks_skipped_slow"] - before["ticks_skipped_slow"],
        "skipped_late": after.get("ticks_skipped_late", 0) - before.get("ticks_skipped_late", 0),
    }


# Every run


def rotated(servers: list[str], round_number: int) -> list[str]:
    """The servers in this round's order: each round starts one server further on."""
    start = (round_number - 1) % len(servers)
    return servers[start:] + servers[:start]


def run_all(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Every client count, in rounds of every server; the JSON is saved after each run."""
    runs = results["runs"]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fanout-") as log_dir:
        for clients in args.clients:
            for round_number in range(1, args.rounds + 1):
                for kind in rotated(args.servers, round_number):
                    print(f"{clients:,} clients, round {round_number}: {kind}", file=sys.stderr)
                    try:
                        run = run_one(kind, clients, args, Path(log_dir))
                    except (OSError, RuntimeError, TimeoutError) as error:
                        print(f"  failed: {error}", file=sys.stderr)
                        run = {"server": kind, "clients_asked": clients, "error": str(error)}
                    runs.append({"round": round_number, **run})
                    results["summary"] = report.summarize(runs)
                    args.json.write_text(json.dumps(results, indent=1) + "\n")


# The command line

QUICK = {
    "clients": "200,1000",
    "rounds": 1,
    "ticks": 3,
    "interval": 0.2,
    "idle_seconds": 0.5,
    "grace": 0.5,
    # A smoke test never replaces the figures kept in the repository.
    "json": Path(tempfile.gettempdir()) / "fanout-quick.json",
    "chart": Path(tempfile.gettempdir()) / "fanout-quick.png",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="a small run for a smoke test")
    add("--clients", default="1000,5000,10000,20000", help="comma-separated client counts")
    add("--servers", default=",".join(SERVERS), help="comma-separated, from the default")
    add("--rounds", type=int, default=3, help="rounds of every server at each count")
    add("--ticks", type=int, default=10, help="ticks measured per run")
    add("--interval", type=float, default=1.0, help="seconds between ticks")
    add("--idle-seconds", type=float, default=2.0, help="idle CPU measured over this")
    add("--grace", type=float, default=3.0, help="seconds after the last tick to wait for it")
    add("--rate", type=float, default=2000, help="connections per second")
    add("--clients-per-loadgen", type=int, default=5000)
    add("--loadgen-max-seconds", type=float, default=240)
    add("--app-args", default="", help="more options for app.py, in quotes")
    add("--json", type=Path, default=HERE / "results" / "fanout.json", help="raw results")
    add("--chart", type=Path, default=ROOT / "docs" / "fanout-lag.png", help="the PNG chart")
    if parser.parse_known_args(argv)[0].quick:
        parser.set_defaults(**QUICK)  # options given on the command line still win
    args = parser.parse_args(argv)
    # A process may open only so many files, a few of them not its clients' sockets.
    most = resource.getrlimit(resource.RLIMIT_NOFILE)[1] - SERVER_SPARE_FILES
    args.clients = [min(int(n), most) for n in args.clients.split(",")]
    args.servers = args.servers.split(",")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Stop before any run, rather than after all of them, if a package is missing.
    missing = [name for name in ("matplotlib", "websockets") if not importlib.util.find_spec(name)]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: pip install -e '.[bench]'")
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {LOADGEN_CPU})  # keep this process off the server's CPU
    raise_file_limit()
    about = {**report.machine(), "file_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1]}
    title = report.title(about, args.rounds, args.ticks, args.interval)
    print(f"{title}; Linux {about['kernel']}", file=sys.stderr)
    settings = {k: v for k, v in vars(args).items() if k not in ("json", "chart")}
    results = {"machine": about, "settings": settings, "title": title, "runs": []}
    run_all(args, results)
    print(report.tables(results["summary"]))
    report.plot(results["summary"], args.chart, title)
    print(f"results: {args.json}\nchart: {args.chart}", file=sys.stderr)


if __name__ == "__main__":
    main()
