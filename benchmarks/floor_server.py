"""The floor of the fan-out benchmark: one non-blocking ``send()`` of the frame per socket.

Not a server to copy: it answers any upgrade request with ``101`` and no checks, never reads
what a client sends, and ticks on one ``epoll`` loop with no framework at all. What it shows is
what one Python process on this machine can do at best with one system call per client, so that
the other servers' figures can be read against it.

``/stats`` answers what ``app.py``'s does for the benchmark (``clients``, ``ticks``,
``ticks_sent``, ``fanout_ms``), and the command line takes the names ``app.py`` takes: ``--port``,
``--interval``, and, ignored, ``--max_clients``, ``--ping_interval`` and ``--logging``.
"""

from __future__ import annotations

import argparse
import base64
import collections
import datetime
import hashlib
import json
import math
import selectors
import socket
import struct
import time
from typing import Any

# RFC 6455, section 1.3 (its example: key "dGhlIHNhbXBsZSBub25jZQ==", accept
# "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="); Tornado and python-websockets use the same value.
WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
EPOLL_STEP = 0.002  # seconds; the loop stops waiting on epoll this long before a tick

stats: dict[str, Any] = {
    "ticks": 0,
    "ticks_sent": 0,
    "ticks_skipped_slow": 0,
    "fanout_ms": collections.deque(maxlen=100),
}


def text_frame(text: str) -> bytes:
    payload = text.encode()
    assert len(payload) < 126, "a tick is a short text"
    return struct.pack("!BB", 0x81, len(payload)) + payload


def stats_response(clients: int) -> bytes:
    body = json.dumps({**stats, "clients": clients, "fanout_ms": list(stats["fanout_ms"])})
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body.encode())


def upgrade_response(request: bytes) -> bytes:
    """The 101 answer to an upgrade request, whatever it asks."""
    key = b""
    for line in request.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            key = value.strip()
    accept = base64.b64encode(hashlib.sha1(key + WEBSOCKET_GUID).digest())
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )


class FloorServer:
    def __init__(self, port: int, interval: float) -> None:
        self.interval = interval
        self.selector = selectors.DefaultSelector()
        self.listener = socket.create_server(("127.0.0.1", port), backlog=1024)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.requests: dict[socket.socket, bytes] = {}
        self.clients: set[socket.socket] = set()

    def run(self) -> None:
        tick = math.floor(time.time() / self.interval) + 1
        while True:
            boundary = tick * self.interval
            if boundary - time.time() > EPOLL_STEP:
                self.handle_events(boundary - time.time() - EPOLL_STEP)
                continue
            # epoll waits in whole milliseconds, rounded up; sleep() is finer.
            while (delay := boundary - time.time()) > 0:
                time.sleep(delay)
            # Late by more than an interval (a long fan-out, a stall): send the time once.
            tick += math.floor(-delay / self.interval) + 1
            self.send_to_all(str(datetime.datetime.now()))

    def handle_events(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            if key.fileobj is self.listener:
                self.accept()
            else:
                self.on_readable(key.fileobj)  # type: ignore[arg-type]

    def accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            # As app.py does (set_nodelay): a tick goes out at once, not after the last ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.requests[sock] = b""
            self.selector.register(sock, selectors.EVENT_READ)

    def on_readable(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(4096)
        except OSError:
            data = b""
        if not data:
            self.drop(sock)
        elif sock in self.requests:
            self.requests[sock] += data
            if b"\r\n\r\n" in self.requests[sock]:
                self.answer(sock, self.requests.pop(sock))

    def answer(self, sock: socket.socket, request: bytes) -> None:
        if request.startswith(b"GET /stats"):
            sock.send(stats_response(len(self.clients)))
            self.drop(sock)
        else:
            sock.send(upgrade_response(request))
            self.clients.add(sock)

    def drop(self, sock: socket.socket) -> None:
        self.selector.unregister(sock)
        self.requests.pop(sock, None)
        self.clients.discard(sock)
        sock.close()

    def send_to_all(self, text: str) -> None:
        started = time.perf_counter()
        frame = text_frame(text)
        # try/except rather than contextlib.suppress: a with-block per send is not free.
        for sock in self.clients:
            try:  # noqa: SIM105
                sock.send(frame)
            except OSError:
                pass  # a full buffer or a gone peer: the floor does not care
        stats["ticks"] += 1
        stats["ticks_sent"] += len(self.clients)
        stats["fanout_ms"].append((time.perf_counter() - started) * 1000)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8888)
    parser.add_argument("--interval", type=float, default=1.0)
    for ignored in ("--max_clients", "--ping_interval", "--logging"):
        parser.add_argument(ignored, help="ignored")
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    FloorServer(args.port, args.interval).run()
