"""Shared test helpers: one place that starts each thing under test.

- ``ServerTestCase``: the real app on the test's IOLoop with a ticking SendThread; it records
  the log and fails a test after which anything was logged as an error or with a traceback;
- ``RawClient``: a WebSocket client on a bare socket, for peers that misbehave below the level
  of a real client library (never read, never answer pings, send broken frames, reset);
- ``ServerProcess``: ``python app.py`` (or another of the project's servers) in a child process;
- ``RedisProcess``: Debian's ``redis-server``, for the cluster tests;
- ``Reader``: a WebSocket client that reads everything in the background;
- ``NginxProcess``: Debian's nginx in the foreground, its files in a temp dir.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import gc
import importlib.util
import json
import logging
import math
import os
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from unittest import mock
from urllib.parse import quote

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.testing import AsyncHTTPTestCase
from tornado.websocket import WebSocketClientConnection, websocket_connect

import app

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")

# Headless Debian Chromium as root: no sandbox, and nothing that reaches for the network.
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests may run as root, in a container
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))


def need_chromium() -> None:
    """Skip the calling test module without Playwright and Chromium; on CI, fail it instead."""
    if importlib.util.find_spec("playwright") is None:
        missing = "the playwright package is missing: pip install -e '.[test]'"
    elif not CHROMIUM.exists():
        missing = f"no Chromium at {CHROMIUM}: apt-get install chromium (or set CHROMIUM=path)"
    else:
        return
    if on_ci():
        pytest.fail(f"browser tests cannot run on CI: {missing}", pytrace=False)
    pytest.skip(missing, allow_module_level=True)


# Every timing in the tests is a multiple of MS. On a slow machine TEST_TIME_SCALE=3 makes the
# whole suite three times as patient, intervals and timeouts alike.
MS = 0.001 * float(os.environ.get("TEST_TIME_SCALE", "1"))
TICK = 20 * MS  # the tick interval of most tests: nothing here sleeps whole seconds
TIMEOUT = 2000 * MS  # how long a test waits for something that should happen at once


def ws_url(port: int, client_id: str | None) -> str:
    """The WebSocket address for ``client_id`` (None leaves the Id argument out)."""
    query = "" if client_id is None else "?Id=" + quote(client_id, safe="")
    return f"ws://127.0.0.1:{port}/websocket{query}"


async def hang_up(connection: WebSocketClientConnection) -> None:
    """Close an open connection and wait for the server's answer, so no socket outlives the loop."""
    connection.close()
    while await asyncio.wait_for(connection.read_message(), TIMEOUT) is not None:
        pass


def get_json(url: str) -> Any:
    """GET ``url`` and decode its JSON body (blocking: for tests that drive a child process)."""
    with urllib.request.urlopen(url, timeout=TIMEOUT * 5) as response:
        return json.load(response)


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


NGINX = Path(os.environ.get("NGINX", "/usr/sbin/nginx"))


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on at ``host`` right now, for a program that takes no port 0."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def on_ci() -> bool:
    """Whether the environment variable CI is set (not empty, "0" or "false")."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def nginx_missing() -> str | None:
    """Say what is missing to run nginx with a self-signed certificate, or return None."""
    if not NGINX.exists():
        return f"no nginx at {NGINX}: apt-get install nginx (or set NGINX=path)"
    if shutil.which("openssl") is None:
        return "no openssl command: apt-get install openssl"
    return None


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """Make a certificate for localhost and 127.0.0.1 and its key; return their paths."""
    certificate, key = directory / "cert.pem", directory / "key.pem"
    command = "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost -addext"
    names = "subjectAltName=DNS:localhost,IP:127.0.0.1"
    subprocess.run(
        [*command.split(), names, "-keyout", str(key), "-out", str(certificate)],
        check=True,
        capture_output=True,
    )
    return certificate, key


class NginxProcess:
    """nginx in the foreground serving ``site``, with its pid, logs and temp files in ``directory``.

    ``site`` is what goes inside nginx's http block, as a file in sites-enabled/ would; the
    main configuration around it keeps every path nginx writes to inside ``directory``, so no
    root paths are needed.
    """

    def __init__(self, site: str, directory: Path, timeout: float = 5 * TIMEOUT) -> None:
        self.directory = directory
        # The workers drop root privileges: let them into the directory for their temp files.
        directory.chmod(0o755)
        (directory / "site.conf").write_text(site)
        temp_paths = "\n".join(
            f"    {kind}_temp_path {directory / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        config = directory / "nginx.conf"
        config.write_text(
            f"pid {directory / 'nginx.pid'};\n"
            f"error_log {self.error_log_path} info;\n"
            "worker_processes 1;\n"
            "events { worker_connections 256; }\n"
            "http {\n"
            f"    access_log {self.access_log_path};\n"
            f"{temp_paths}\n"
            f"    include {directory / 'site.conf'};\n"
            "}\n"
        )
        self.process = subprocess.Popen(
            [str(NGINX), "-p", str(directory), "-c", str(config), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # nginx writes its pid file once it listens.
        pid_file = directory / "nginx.pid"
        deadline = time.monotonic() + timeout
        while not (pid_file.exists() and pid_file.read_text().strip() == str(self.process.pid)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("nginx did not start:\n" + self.error_log)
            time.sleep(10 * MS)

    @property
    def error_log_path(self) -> Path:
        return self.directory / "error.log"

    @property
    def access_log_path(self) -> Path:
        return self.directory / "access.log"

    @property
    def error_log(self) -> str:
        path = self.error_log_path
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, timeout: float = 5 * TIMEOUT) -> int:
        """Stop nginx and its worker with SIGTERM (SIGQUIT would wait for every open WebSocket).

        Return its exit status. Killing the master alone would leave its worker running.
        """
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def close(self) -> None:
        """Stop nginx if it still runs."""
        if self.process.poll() is None:
            self.stop()
        self.process.wait()


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


class Reader:
    """A WebSocket client that reads every message in the background, as a browser does."""

    opened: ClassVar[list[Reader]] = []  # closed after each test by a fixture in conftest.py

    def __init__(self, connection: WebSocketClientConnection) -> None:
        Reader.opened.append(self)
        self.connection = connection
        self.messages: list[str] = []
        self.arrived = asyncio.Event()
        self.task = asyncio.ensure_future(self.pump())

    @classmethod
    async def connect(cls, url: str) -> Reader:
        return cls(await websocket_connect(url))

    async def pump(self) -> None:
        while (message := await self.connection.read_message()) is not None:
            self.messages.append(message)  # type: ignore[arg-type]
            self.arrived.set()
        self.connection.close()  # the server hung up; this marks the connection closed here too
        self.arrived.set()

    @property
    def closed(self) -> tuple[int | None, str | None] | None:
        """The close code and reason once the connection has ended, else None."""
        if not self.task.done():
            return None
        return self.connection.close_code, self.connection.close_reason

    async def wait_for(self, predicate: Callable[[Reader], bool], timeout: float = TIMEOUT) -> None:
        """Wait until ``predicate(self)`` holds, or fail."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out; messages {self.messages[-5:]}, {self.closed}")
            self.arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)

    async def ticks(self, count: int, timeout: float = TIMEOUT) -> list[str]:
        """Wait for ``count`` more messages and return them."""
        start = len(self.messages)
        await self.wait_for(lambda r: len(r.messages) >= start + count or bool(r.closed), timeout)
        assert self.closed is None, f"closed while waiting for messages: {self.closed}"
        return self.messages[start : start + count]

    async def until_closed(self, timeout: float = TIMEOUT) -> tuple[int | None, str | None]:
        await self.wait_for(lambda r: r.closed is not None, timeout)
        return self.closed  # type: ignore[return-value]

    def close(self) -> None:
        self.connection.close()

    async def aclose(self) -> None:
        """Close and wait for the closing handshake, so the socket is gone before the loop."""
        self.connection.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.task), TIMEOUT)

    @classmethod
    async def close_all(cls) -> None:
        """Close every reader still open, at the end of a test's event loop."""
        while cls.opened:
            await cls.opened.pop().aclose()

    @classmethod
    def abandon_all(cls) -> None:
        """After a test that failed with readers open and its loop gone: drop their sockets."""
        while cls.opened:
            stream = cls.opened.pop().connection.protocol.stream  # type: ignore[union-attr]
            if stream.socket is not None:
                stream.socket.close()


async def closing(scenario: Awaitable[T]) -> T:
    """Run a test's scenario, then close the readers it left open, on the same loop."""
    try:
        return await scenario
    finally:
        await Reader.close_all()


# Frame opcodes (RFC 6455 section 5.2).
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


class RawClient:
    """A WebSocket client on a bare non-blocking socket: it reads only when told to.

    A real client library answers pings and drains its socket by itself; this one lets a test
    be the peer that vanishes, never reads, sends broken frames or hangs up with a reset.
    """

    def __init__(self, sock: socket.socket, buffered: bytes) -> None:
        self.sock = sock
        self.buffer = buffered

    @classmethod
    async def connect(
        cls,
        port: int,
        client_id: str = "raw",
        *,
        rcvbuf: int | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = TIMEOUT,
    ) -> tuple[int, RawClient]:
        """Do the opening handshake; return the HTTP status and the client."""
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        try:
            if rcvbuf is not None:
                # Before connect(): the receive buffer sets the window the server is offered.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), timeout)
            key = base64.b64encode(os.urandom(16)).decode()
            lines = [
                f"GET /websocket?Id={quote(client_id, safe='')} HTTP/1.1",
                f"Host: 127.0.0.1:{port}",
                "Upgrade: websocket",
                "Connection: Upgrade",
                f"Sec-WebSocket-Key: {key}",
                "Sec-WebSocket-Version: 13",
                *(f"{name}: {value}" for name, value in (headers or {}).items()),
            ]
            await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode())
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout)
                if not chunk:
                    raise ConnectionError(f"closed during the handshake: {received!r}")
                received += chunk
        except BaseException:
            sock.close()
            raise
        head, _, rest = received.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        return status, cls(sock, rest)

    async def send_frame(self, opcode: int, payload: bytes, *, fin: bool = True) -> None:
        """Send one masked frame, as a client must."""
        await asyncio.get_running_loop().sock_sendall(self.sock, client_frame(opcode, payload, fin))

    async def _read_exactly(self, n: int, timeout: float) -> bytes | None:
        loop = asyncio.get_running_loop()
        while len(self.buffer) < n:
            chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), timeout)
            if not chunk:
                return None
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    async def read_frame(self, timeout: float = TIMEOUT) -> tuple[int, bytes] | None:
        """Read one unmasked frame from the server; None when the server has hung up."""
        header = await self._read_exactly(2, timeout)
        if header is None:
            return None
        opcode, length = header[0] & 0x0F, header[1] & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self._read_exactly(2, timeout) or b"\0\0")
        elif length == 127:
            (length,) = struct.unpack("!Q", await self._read_exactly(8, timeout) or b"\0" * 8)
        payload = await self._read_exactly(length, timeout)
        if payload is None:
            return None
        return opcode, payload

    async def read_all(self, timeout: float = TIMEOUT) -> list[tuple[int, bytes]]:
        """Read frames until the server hangs up."""
        frames = []
        while (frame := await self.read_frame(timeout)) is not None:
            frames.append(frame)
        return frames

    async def read_until_close(self, timeout: float = TIMEOUT) -> list[tuple[int, bytes]]:
        """Read frames up to the server's close frame, answer it, and read to the hang-up."""
        frames = []
        while (frame := await self.read_frame(timeout)) is not None:
            frames.append(frame)
            if frame[0] == CLOSE:
                await self.send_frame(CLOSE, frame[1][:2])
                frames += await self.read_all(timeout)
                break
        return frames

    def abort(self) -> None:
        """Hang up with a TCP reset instead of a FIN, as a crashed or unplugged peer might."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


def client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """Encode one masked client frame (RFC 6455 section 5.2)."""
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return header + mask + masked


def parse_close(payload: bytes) -> tuple[int | None, str]:
    if len(payload) < 2:
        return None, ""
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode()


def boundary_index(text: str, interval: float) -> tuple[int, float]:
    """The multiple of ``interval`` a pushed text belongs to, and how long after it was taken.

    The SendThread wakes at (or just after) each multiple of the interval on the wall clock and
    sends ``str(datetime.now())``, so a tick that is late by less than an interval still maps to
    its own multiple, and consecutive ticks map to consecutive numbers. (The 1% margin absorbs
    the text's truncation to microseconds.)
    """
    taken = datetime.datetime.fromisoformat(text).timestamp()
    index = math.floor(taken / interval + 0.01)
    return index, taken - index * interval


def tick_slots(texts: Iterable[str], interval: float) -> list[int]:
    """Number each tick by the multiple of ``interval`` it was sent at."""
    return [boundary_index(text, interval)[0] for text in texts]


def gaps(slots: list[int]) -> list[tuple[int, int]]:
    """The pairs of consecutive slots that are not one apart."""
    return [(a, b) for a, b in zip(slots, slots[1:]) if b - a != 1]


@contextlib.contextmanager
def recording_sends(port: int) -> Iterator[list[tuple[int, bytes]]]:
    """Record what the server on ``port`` sends to its clients, with the thread that sent it.

    The tick's loop sends on the socket itself and Tornado's IOStream does the same, so patching
    ``socket.send()`` sees every byte. Other sockets of the process (test clients, the loop's
    wake-up pipe, which the SendThread writes to) are left out by their local port.
    """
    sends: list[tuple[int, bytes]] = []
    original = socket.socket.send

    def recording_send(sock: socket.socket, data: Any, *flags: int) -> int:
        if sock.family == socket.AF_INET and sock.getsockname()[1] == port:
            sends.append((threading.get_ident(), bytes(data)))
        return original(sock, data, *flags)

    with mock.patch.object(socket.socket, "send", recording_send):
        yield sends


def server_text_frames(sends: Iterable[tuple[int, bytes]]) -> list[str]:
    """The texts of the short, unmasked text frames among ``sends``: what a server writes."""
    return [data[2:].decode() for _, data in sends if data[:1] == b"\x81" and data[1] < 126]


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
