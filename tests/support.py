"""Shared test helpers: an in-process test case and a real server process."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from tornado.testing import AsyncHTTPTestCase
from tornado.websocket import WebSocketClientConnection, websocket_connect

import app

ROOT = Path(__file__).resolve().parents[1]

# Tiny intervals keep the tests fast; nothing here sleeps whole seconds.
TICK = 0.02


class TickServerTestCase(AsyncHTTPTestCase):
    """The real app on the test's IOLoop, with a SendThread ticking every ``interval``."""

    interval = TICK
    settings: ClassVar[dict[str, Any]] = {}

    def setUp(self) -> None:
        app.clients.clear()
        app.stats.reset()
        super().setUp()
        self.connections: list[WebSocketClientConnection] = []
        self.thread = app.SendThread(self.io_loop, self.interval)
        self.thread.start()

    def tearDown(self) -> None:
        self.thread.stop()
        self.thread.join()
        for connection in self.connections:
            connection.close()
        app.clients.clear()
        super().tearDown()

    def get_app(self) -> Any:
        return app.make_app(interval=self.interval, **self.settings)

    def get_ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.get_http_port()}{path}"

    async def ws_connect(self, client_id: str | None = "a", **kwargs: Any):
        """Connect to /websocket with the given Id (None leaves the argument out)."""
        query = "" if client_id is None else "?Id=" + client_id
        connection = await websocket_connect(self.get_ws_url("/websocket" + query), **kwargs)
        self.connections.append(connection)
        return connection


class ServerProcess:
    """``python app.py`` in a child process on a free port, its log collected as it runs."""

    def __init__(self, *args: str, port: int = 0, timeout: float = 15.0) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), f"--port={port}", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        listening = threading.Event()
        self.port = 0

        def collect() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.lines.append(line)
                found = re.search(r"Listening on http://[^:]+:(\d+)/", line)
                if found:
                    self.port = int(found.group(1))
                    listening.set()

        self.reader = threading.Thread(target=collect, daemon=True)
        self.reader.start()
        if not listening.wait(timeout):
            self.process.kill()
            raise RuntimeError("server did not start:\n" + self.log)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/websocket"

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send ``signum`` and return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        self.close()
        return code

    def close(self) -> None:
        """Kill the process if it still runs, and release its pipe."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.reader.join(10)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log)
            if found:
                return found
            time.sleep(0.01)
        raise AssertionError(f"{pattern!r} not in the log:\n{self.log}")
