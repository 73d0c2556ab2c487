"""Debian's ``redis-server`` and ``redis-sentinel`` on free loopback ports, files in a temp dir."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from support import MS, TIMEOUT, free_port

REDIS_SERVER = Path(
    os.environ.get("REDIS_SERVER", shutil.which("redis-server") or "/usr/bin/redis-server")
)
REDIS_SENTINEL = Path(
    os.environ.get("REDIS_SENTINEL", shutil.which("redis-sentinel") or "/usr/bin/redis-sentinel")
)


def redis_missing() -> str | None:
    if not REDIS_SERVER.exists():
        return f"no redis-server at {REDIS_SERVER}: apt-get install redis-server"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "the redis package is missing: pip install -e '.[test]'"
    return None


def sentinel_missing() -> str | None:
    if not REDIS_SENTINEL.exists():
        return f"no redis-sentinel at {REDIS_SENTINEL}: apt-get install redis-sentinel"
    return redis_missing()


def answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_and_wait(
    command: list[str], directory: Path, port: int, timeout: float = 5 * TIMEOUT
) -> subprocess.Popen[bytes]:
    """Start a Redis program, its output in ``directory``/redis.log; wait until it answers."""
    with open(directory / "redis.log", "ab") as log_file:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + timeout
    while not answers_ping(port):
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.kill()
            process.wait(5 * TIMEOUT)
            log = (directory / "redis.log").read_text(errors="replace")
            raise RuntimeError(f"{command[0]} did not start:\n" + log)
        time.sleep(10 * MS)
    return process


def stop_process(process: subprocess.Popen[bytes] | None, signum: int) -> None:
    if process is not None:
        if process.poll() is None:
            process.send_signal(signum)
        process.wait(5 * TIMEOUT)


class RedisProcess:
    """``redis-server`` on a free loopback port, persistence off, its files in ``directory``.

    ``stop()`` and ``start()`` again bring it back on the same port, as a restarted Redis.
    """

    def __init__(self, directory: Path, replica_of: int | None = None) -> None:
        """``replica_of``: the port of a primary on loopback to replicate."""
        self.directory = directory
        self.port = free_port()
        self.replica_of = replica_of
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [str(REDIS_SERVER), "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        command += ["--repl-diskless-sync-delay", "0"]  # a replica syncs at once
        if self.replica_of is not None:
            command += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        self.process = start_and_wait(command, self.directory, self.port)

    def ping(self) -> bool:
        return answers_ping(self.port)

    def stop(self, signum: int = signal.SIGKILL) -> None:
        """Stop it by its own pid (at once, by default: as a crash would)."""
        stop_process(self.process, signum)
        self.process = None


class SentinelProcess:
    """``redis-sentinel`` on a free loopback port watching the primary at ``primary_port`` as
    ``service``; with one Sentinel, quorum 1, it fails over ``down_after`` seconds after the
    primary stops answering. Its config file, which it rewrites, is in ``directory``."""

    def __init__(
        self,
        directory: Path,
        primary_port: int,
        service: str = "primary",
        down_after: float = 200 * MS,
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self.service = service
        config = directory / "sentinel.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {directory}\n"
            f"sentinel monitor {service} 127.0.0.1 {primary_port} 1\n"
            f"sentinel down-after-milliseconds {service} {round(down_after * 1000)}\n"
            f"sentinel failover-timeout {service} {round(10 * down_after * 1000)}\n"
        )
        self.process: subprocess.Popen[bytes] | None = start_and_wait(
            [str(REDIS_SENTINEL), str(config)], directory, self.port
        )

    def url(self, db: int = 0) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.service}/{db}"

    def stop(self, signum: int = signal.SIGTERM) -> None:
        stop_process(self.process, signum)
        self.process = None
