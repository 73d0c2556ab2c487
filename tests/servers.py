"""The server under test: the real app on the test's IOLoop, or ``python app.py`` as a process."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

from clients import RawClient
from support import MS, ROOT, TICK, TIMEOUT, get_json, ws_url
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.testing import AsyncHTTPTestCase
from tornado.websocket import WebSocketClientConnection, websocket_connect

import app


def set_open_files(limits: tuple[int, int]) -> None:
    """Set this process's (soft, hard) limit on open files; run in the child before exec."""
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)


class ServerProcess:
    """``python app.py`` in a child process on a free port, its log collected as it runs.

    ``script`` runs another server of the project instead (``docs/minimal.py``); it must take
    ``--port`` and log ``Listening on http://host:port/``.
    """

    def __init__(
        self,
        *args: str,
        port: int = 0,
        script: str = "app.py",
        env: dict[str, str] | None = None,
        timeout: float = 8 * TIMEOUT,
        open_files: tuple[int, int] | None = None,
    ) -> None:
        """Start the server; ``env`` adds to (or overrides) this process's environment, and
        ``open_files`` is the (soft, hard) limit on open files the process starts with."""
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / script), f"--port={port}", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            preexec_fn=None if open_files is None else lambda: set_open_files(open_files),
            env={**os.environ, **(env or {})},
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

    def ws_url(self, client_id: str | None) -> str:
        return ws_url(self.port, client_id)

    def stats(self) -> dict[str, Any]:
        return get_json(self.url + "/stats")

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 5 * TIMEOUT) -> int:
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
        """Kill the process (and its workers, if any) if it still runs, and release its pipe."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        with contextlib.suppress(ProcessLookupError):
            # With --processes the server leads its own process group, its workers in it.
            os.killpg(self.process.pid, signal.SIGKILL)
        self.reader.join(10)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def wait_for_log(self, pattern: str, timeout: float = 5 * TIMEOUT) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log)
            if found:
                return found
            time.sleep(10 * MS)
        raise AssertionError(f"{pattern!r} not in the log:\n{self.log}")


PROJECT_LOGGERS = ("app", "timepush")


class RecordingHandler(logging.Handler):
    """Keep every log record, to assert on what the server logged."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, logger: str | None = None) -> list[str]:
        """The messages of one logger; by default, of ``app`` and the ``timepush`` modules."""
        return [
            r.getMessage()
            for r in self.records
            if r.name == logger or (logger is None and r.name.split(".")[0] in PROJECT_LOGGERS)
        ]

    def problems(self) -> list[str]:
        """Records that mean something went wrong: errors, tracebacks, unretrieved exceptions.

        The access log is left to its own test, so that one finding fails one test.
        """
        return [
            f"{r.name} {r.levelname}: {r.getMessage()}"
            for r in self.records
            if r.name != "tornado.access" and (r.levelno >= logging.ERROR or r.exc_info)
        ]


class ServerTestCase(AsyncHTTPTestCase):
    """The real app on the test's IOLoop, with a SendThread ticking every ``interval``.

    ``app_settings`` override the app's settings. A test fails if, by its end, anything was
    logged as an error or with a traceback (an exception nobody retrieved included).
    """

    interval = TICK
    app_settings: ClassVar[dict[str, Any]] = {}

    def setUp(self) -> None:
        self.log = RecordingHandler()
        logging.getLogger().addHandler(self.log)
        self.app_log = logging.getLogger("app")
        self.levels = {name: logging.getLogger(name).level for name in PROJECT_LOGGERS}
        for name in PROJECT_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO)
        app.clients.clear()
        app.targets.clear()
        app.stats.reset()
        super().setUp()
        app.targets.check()  # as serve() does: the fast path, unless a test forces the fallback
        self.connections: list[WebSocketClientConnection] = []
        self.raw_clients: list[RawClient] = []
        self.pumps: list[asyncio.Future[None]] = []
        self.thread = app.SendThread(self.io_loop, self.interval)
        self.thread.start()

    def tearDown(self) -> None:
        try:
            self.thread.stop()
            self.thread.join()
            for connection in self.connections:
                connection.close()
            for raw in self.raw_clients:
                raw.close()
            # The tick's own index of the clients never drifts from the registry.
            self.assertEqual(
                {client_id: entry["object"] for client_id, entry in app.clients.items()},
                app.targets.handlers(),
            )
            app.clients.clear()
            app.targets.clear()
            super().tearDown()
            # An exception nobody retrieved from a Future is only logged when it is collected.
            gc.collect()
            self.assertEqual(self.log.problems(), [])
        finally:
            logging.getLogger().removeHandler(self.log)
            for name, level in self.levels.items():
                logging.getLogger(name).setLevel(level)

    def get_app(self) -> Any:
        return app.make_app(interval=self.interval, **self.app_settings)

    async def wait_until(
        self, predicate: Callable[[], bool], timeout: float = TIMEOUT, message: str = ""
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                self.fail(message or f"timed out after {timeout} s waiting for {predicate}")
            await asyncio.sleep(5 * MS)

    def ws_url(self, client_id: str | None) -> str:
        return ws_url(self.get_http_port(), client_id)

    async def connect(
        self, client_id: str | None = "a", headers: dict[str, str] | None = None, **kwargs: Any
    ) -> WebSocketClientConnection:
        """Connect with Tornado's client (which answers pings and reads as it should)."""
        request = HTTPRequest(self.ws_url(client_id), headers=headers)
        connection = await websocket_connect(request, **kwargs)
        self.connections.append(connection)
        return connection

    async def refusal(
        self, client_id: str | None, headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        """Try to connect, expecting an HTTP error; return its status and reason."""
        with self.assertRaises(HTTPClientError) as caught:
            await self.connect(client_id, headers)
        return caught.exception.code, caught.exception.message or ""

    def keep_reading(self, connection: WebSocketClientConnection) -> list[str | bytes]:
        """Read every message in the background, as a browser does; return the list they go to.

        Tornado's client stops reading the socket (and answering pings) while a message it
        has received waits to be read.
        """
        received: list[str | bytes] = []

        async def pump() -> None:
            while (message := await connection.read_message()) is not None:
                received.append(message)

        self.pumps.append(asyncio.ensure_future(pump()))
        return received

    async def raw_connect(self, client_id: str = "raw", **kwargs: Any) -> RawClient:
        status, raw = await RawClient.connect(self.get_http_port(), client_id, **kwargs)
        self.raw_clients.append(raw)
        self.assertEqual(status, 101)
        await self.wait_until(lambda: client_id in app.clients)
        return raw

    async def read(self, connection: WebSocketClientConnection, timeout: float = TIMEOUT) -> Any:
        return await asyncio.wait_for(connection.read_message(), timeout)

    async def read_ticks(self, connection: WebSocketClientConnection, count: int) -> list[str]:
        """Read ``count`` messages, failing if the connection closes first."""
        ticks = []
        for _ in range(count):
            message = await self.read(connection)
            self.assertIsNotNone(message, "connection closed while waiting for ticks")
            ticks.append(message)
        return ticks

    async def read_until_closed(
        self, connection: WebSocketClientConnection, timeout: float = TIMEOUT
    ) -> list[str | bytes]:
        """Read until the server closes; return what came before."""
        messages = []
        while (message := await self.read(connection, timeout)) is not None:
            messages.append(message)
        return messages

    async def stats(self) -> dict[str, Any]:
        response = await self.http_client.fetch(self.get_url("/stats"))
        self.assertTrue(response.headers["Content-Type"].startswith("application/json"))
        return json.loads(response.body)


async def post_push(
    base_url: str, body: Any, token: str | None, headers: dict[str, str] | None = None
) -> tuple[int, str, Any]:
    """POST ``body`` (JSON unless bytes) to /push; return the status, reason and JSON answer."""
    from tornado.httpclient import AsyncHTTPClient

    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await AsyncHTTPClient().fetch(
        base_url + "/push", method="POST", body=data, headers=all_headers, raise_error=False
    )
    try:
        answer = json.loads(response.body) if response.body else None
    except ValueError:
        answer = response.body
    return response.code, response.reason, answer
