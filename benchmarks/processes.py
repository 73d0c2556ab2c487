"""The processes of a fan-out run: the server under test, the Redis that several workers need,
and what ``/proc`` says about them.

A server that forks workers is a tree of processes: its CPU time and memory are the sums over
the tree, read afresh each time (a worker that died and was restarted has a new pid).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from loadgen import raise_file_limit

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "benchmarks"
SERVERS = {
    "app": ROOT / "app.py",
    "naive": HERE / "naive_server.py",
    "websockets": HERE / "websockets_server.py",
    "floor": HERE / "floor_server.py",
}
SERVER_CPU, LOADGEN_CPU = 0, 1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MEMORY_FIELDS = ("VmRSS", "RssAnon", "Pss")


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


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from ``/proc/PID/task/TID/children``."""
    found, index = [pid], 0
    while index < len(found):
        tasks = f"/proc/{found[index]}/task"
        for task in os.listdir(tasks) if os.path.isdir(tasks) else []:
            with contextlib.suppress(FileNotFoundError):  # the thread ended meanwhile
                found += map(int, Path(f"{tasks}/{task}/children").read_text().split())
        index += 1
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time of all a process's threads, in seconds, to the nanosecond; 0 if it is gone.

    ``/proc/PID/stat`` counts in clock ticks (10 ms): too coarse for an idle server.
    """
    total_ns = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            total_ns += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
    except FileNotFoundError:
        pass
    return total_ns / 1e9


def tree_cpu_seconds(pid: int) -> float:
    return sum(map(cpu_seconds, process_tree(pid)))


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon (the heap) and Pss over a process tree, in KB.

    After a fork, parent and workers share pages: VmRSS counts a shared page in each of them,
    Pss (from ``smaps_rollup``) splits it between them, so Pss adds up to the tree's true size.
    """
    total = dict.fromkeys(MEMORY_FIELDS, 0)
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/status") as status:
                lines = list(status)
            with open(f"/proc/{member}/smaps_rollup") as rollup:
                lines += list(rollup)
        except FileNotFoundError:
            continue
        fields = dict(line.split(":", 1) for line in lines if ":" in line)
        for name in MEMORY_FIELDS:
            total[name] += int(fields[name].split()[0])
    return total


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, stolen) CPU seconds of the whole machine, all cores, from /proc/stat."""
    with open("/proc/stat") as stat:
        user, nice, system, _, _, _, _, steal = map(int, stat.readline().split()[1:9])
    return (user + nice + system) / CLOCK_TICKS, steal / CLOCK_TICKS


def pin_workers(pid: int, cpus: int) -> dict[int, int]:
    """Pin each worker of the server ``pid`` to a CPU of its own, round the CPUs: {pid: cpu}.

    The workers inherit the parent's CPU set at the fork; the parent only waits, so it is left
    on every CPU.
    """
    placement = {}
    for number, worker in enumerate(sorted(process_tree(pid)[1:])):
        placement[worker] = number % cpus
        os.sched_setaffinity(worker, {number % cpus})
    return placement


class RedisServer:
    """A throwaway ``redis-server`` on a free loopback port: no persistence, files in a temp dir."""

    def __init__(self) -> None:
        program = shutil.which("redis-server")
        if program is None:
            raise RuntimeError(
                "redis-server is needed for --processes: apt-get install redis-server"
            )
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tempfile.TemporaryDirectory(prefix="fanout-redis-")
        self.process = subprocess.Popen(
            [
                *(program, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--dir", self.dir.name, "--logfile", "redis.log"),
                *("--save", "", "--appendonly", "no"),  # no files: nothing to clean but the dir
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.pid = self.process.pid
        if not wait_until(self.answers, timeout=10):
            self.stop()
            raise RuntimeError("redis-server did not start")

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.dir.cleanup()


# The server under test


def workers_of(kind: str) -> int:
    """``app-N`` is app.py with ``--processes=N``; every other server is one process."""
    return int(kind[4:]) if kind.startswith("app-") else 1


def all_cpus() -> set[int]:
    return set(range(os.cpu_count() or 1))


def placement(workers: int) -> tuple[set[int], set[int]]:
    """(server's CPUs, load generators' CPUs). One server process gets CPU 0 to itself and the
    load generators CPU 1. Several workers get a CPU each (``pin_workers``): with 2 cores no CPU
    is left, so the load generators may run anywhere and share the cores with the workers."""
    if workers == 1 and (os.cpu_count() or 1) >= 2:
        return {SERVER_CPU}, {LOADGEN_CPU}
    return all_cpus(), all_cpus()


class Server:
    """One server under test, in child processes placed by ``placement``; its own Redis if it
    has several workers."""

    def __init__(
        self, kind: str, max_clients: int, interval: float, log_dir: Path, extra: list[str]
    ) -> None:
        self.kind = kind
        self.workers = workers_of(kind)
        self.redis = RedisServer() if self.workers > 1 else None
        if self.redis is not None:
            extra = [*extra, f"--processes={self.workers}", f"--redis={self.redis.url}"]
        self.port = free_port()
        self.log_path = log_dir / f"{kind}-{self.port}.log"
        command = [
            sys.executable,
            str(SERVERS[kind.split("-")[0]]),
            f"--port={self.port}",
            f"--max_clients={max_clients}",
            f"--interval={interval}",
            "--ping_interval=0",
            "--logging=warning",
            *extra,
        ]
        cpus = placement(self.workers)[0]
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                preexec_fn=lambda: (os.sched_setaffinity(0, cpus), raise_file_limit()),
            )
        self.pid = self.process.pid
        if not wait_until(self.lets_in, timeout=20) or not wait_until(self.all_up, timeout=20):
            self.stop()
            raise RuntimeError(f"{kind} server did not start:\n{self.log_tail()}")
        if self.workers > 1 and (os.cpu_count() or 1) >= 2:
            pin_workers(self.pid, os.cpu_count() or 1)

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

    def all_up(self) -> bool:
        """Whether every worker has joined the cluster (always, for one process)."""
        cluster = self.stats().get("cluster") if self.workers > 1 else None
        return self.workers == 1 or len((cluster or {}).get("nodes", [])) == self.workers

    def log_tail(self) -> str:
        return self.log_path.read_text()[-3000:]

    def stats(self, timeout: float = 30.0) -> dict[str, Any]:
        """``/stats`` of one process: whichever worker accepted the connection."""
        url = f"http://127.0.0.1:{self.port}/stats"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.load(response)

    def clients(self) -> int:
        """Clients of every worker: the cluster's totals, which lag by up to --redis_interval."""
        figures = self.stats()
        if self.workers == 1:
            return figures["clients"]
        return (figures.get("cluster") or {}).get("clients", 0)

    def stats_by_worker(self) -> dict[str, dict[str, Any]]:
        """Each worker's ``/stats``: ask again until every worker has answered (bounded)."""
        found: dict[str, dict[str, Any]] = {}
        for _ in range(20 * self.workers):
            figures = self.stats()
            found[figures.get("node", self.kind)] = figures
            if len(found) == self.workers:
                break
        return found

    def affinity(self) -> dict[str, list[int]]:
        """The CPUs each process of the server may run on, by pid."""
        return {str(pid): sorted(os.sched_getaffinity(pid)) for pid in process_tree(self.pid)}

    def redis_cpu_seconds(self) -> float:
        return cpu_seconds(self.redis.pid) if self.redis is not None else 0.0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        if self.redis is not None:
            self.redis.stop()
