"""WebSocket clients for tests: one that reads everything, one on a bare socket that misbehaves,
and one that comes back after a restart as the page does."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import socket
import ssl
import struct
import time
from collections.abc import Awaitable, Callable
from typing import ClassVar, TypeVar
from urllib.parse import quote

from support import TIMEOUT
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClientConnection, websocket_connect

T = TypeVar("T")


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


# The close codes after which the page comes back at a random moment of its restart window.
RESTART_CODES = frozenset({1001, 1012})


def trusting_context() -> ssl.SSLContext:
    """A TLS context that takes any certificate (the tests' own self-signed one). Made once:
    Tornado's validate_cert=False makes a new one for each connection, and reads every CA
    certificate of the system for it, which a few hundred reconnects at once pay for."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


TRUSTING = trusting_context()


class Returner:
    """A client that comes back as the page (static/clock.js) does, and counts its ticks.

    After a 1012 or 1001 it reconnects at a random moment of ``window`` seconds; after a refusal
    or a lost link, with full-jitter backoff from ``backoff`` up to ``backoff_max`` seconds;
    after 4000 never. It keeps every tick it read, and when each connection opened and closed.
    """

    def __init__(
        self, url: str, *, window: float, backoff: float = 0.05, backoff_max: float = 1.0
    ) -> None:
        self.url = url
        self.window = window
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.ticks: list[str] = []
        self.opened: list[float] = []  # time.monotonic() of each handshake that succeeded
        self.closed: list[tuple[float, int | None]] = []  # and of each close, with its code
        self.refused = 0
        self.connection: WebSocketClientConnection | None = None
        self.stopping = False

    async def run(self) -> None:
        """Stay connected until ``stop()``: connect, read, and come back after each close."""
        attempt = 0
        while not self.stopping:
            try:
                request = HTTPRequest(self.url, ssl_options=TRUSTING)
                self.connection = await websocket_connect(request)
            except (HTTPClientError, OSError, StreamClosedError):
                self.refused += 1
                await asyncio.sleep(random.uniform(0, self.step(attempt)))
                attempt += 1
                continue
            self.opened.append(time.monotonic())
            while (message := await self.connection.read_message()) is not None:
                self.ticks.append(message)  # type: ignore[arg-type]
                attempt = 0
            code = self.connection.close_code
            self.closed.append((time.monotonic(), code))
            self.connection.close()  # the server hung up; this marks the connection closed here
            if self.stopping or code == 4000:
                return
            first = code in RESTART_CODES and attempt == 0
            await asyncio.sleep(random.uniform(0, self.window if first else self.step(attempt)))
            attempt += 1

    def step(self, attempt: int) -> float:
        return min(self.backoff_max, self.backoff * 2**attempt)

    @property
    def connected(self) -> bool:
        return (
            self.connection is not None
            and self.connection.close_code is None
            and (len(self.opened) > len(self.closed))
        )

    async def stop(self) -> None:
        """Close the connection and wait for the server's answer."""
        self.stopping = True
        if self.connection is not None:
            self.connection.close()
