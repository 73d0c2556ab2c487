"""Debian's ``redis-server`` on a free loopback port, its files in a temp dir."""

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


def redis_missing() -> str | None:
    if not REDIS_SERVER.exists():
        return f"no redis-server at {REDIS_SERVER}: apt-get install redis-server"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "the redis package is missing: pip install -e '.[test]'"
    return None


class RedisProcess:
    """``redis-server`` on a free loopback port, persistence off, its files in ``directory``.

    ``stop()`` and ``start()`` again bring it back on the same port, as a restarted Redis.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 5 * TIMEOUT) -> None:
        command = [str(REDIS_SERVER), "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        with open(self.directory / "redis.log", "ab") as log_file:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = (self.directory / "redis.log").read_text(errors="replace")
                raise RuntimeError("redis-server did not start:\n" + log)
            time.sleep(10 * MS)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, signum: int = signal.SIGKILL) -> None:
        """Stop it by its own pid (at once, by default: as a crash would)."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signum)
            self.process.wait(5 * TIMEOUT)
            self.process = None
