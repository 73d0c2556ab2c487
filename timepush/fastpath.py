"""The tick's fast path: one frame for everyone, one system call per client.

This is the one module that reads Tornado below its public API, for speed, and it says what it
reads here. With 10,000 clients a tick is mostly Python around ``send()``; calling Tornado's
methods for every client would cost it about a tenth more CPU (docs/performance.md). So for each
client the loop reads:

- ``connection.server_terminated``: true once a close frame went out (``is_closing()`` reads it);
- ``stream._total_write_index`` and ``stream._total_write_done_index``: they differ exactly while
  bytes are queued (``writing()``, which the slow-client rule needs);

and sends on the socket itself, as ``IOStream.write_to_fd()`` would. ``check()`` makes sure, once
at start-up, that these still exist and mean that. If not, it logs one warning and the loop goes
through the public API instead: ``is_closing()``, ``writing()`` and ``stream.write()``.

The words of sending, here and in ``app.py``:

- ``write_*`` writes frames and counts nothing: ``syscall_write`` makes one ``send()`` system
  call for one client, ``Targets.write_to_each`` and ``Targets.write_to_one`` go through clients;
- a client whose last frame is still queued is not written to but handed back as *busy*, for the
  slow-client rule of ``MyWebSocketHandler.apply_slow_client_rule``;
- ``send_*`` (in ``app.py`` and ``push.py``) are ticks and pushes: they write and count.

This module imports nothing of the project.
"""

from __future__ import annotations

import logging
import socket
import struct
from typing import Any

import tornado
import tornado.iostream
import tornado.websocket

log = logging.getLogger(__name__)

# A client as the loop sees it: its WebSocket connection, that connection's stream, and the
# stream's socket, kept from the start (once the stream closes, stream.socket is None, while this
# socket object stays and refuses a send() with an OSError).
Target = tuple[tornado.websocket.WebSocketProtocol, tornado.iostream.IOStream, socket.socket]


def encode_text_frame(text: str) -> bytes:
    """Build one unmasked WebSocket text frame (RFC 6455 section 5.2), as a server sends it."""
    payload = text.encode("utf-8")
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x81, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, length)
    else:
        header = struct.pack("!BBQ", 0x81, 127, length)
    return header + payload


def syscall_write(stream: tornado.iostream.IOStream, sock: socket.socket, frame: Any) -> bool:
    """Write a frame to a stream with nothing queued in one ``send()``; say whether it went.

    The stream queues whatever the socket had no room for, and keeps the bytes in order. The
    server speaks plain TCP (TLS ends at the proxy in front), so the socket takes the frame as is.
    """
    try:
        sent = sock.send(frame)
    except BlockingIOError:
        sent = 0
    except OSError:
        stream.close()  # the peer is gone; the handler's on_close() cleans up
        return False
    if sent < len(frame):
        stream.write(frame[sent:])
    return True


class Targets:
    """The connected clients, by Id, in the form the tick's loop goes through fastest.

    Going from one tuple to the next is cheaper than going from each handler to its connection,
    stream and socket, objects scattered in memory. ``app.py`` keeps it in step with ``clients``.
    """

    def __init__(self) -> None:
        self.by_id: dict[str, Target] = {}
        self.internals = True  # read Tornado's attributes; False after a failed check()

    def add(self, client_id: str, handler: tornado.websocket.WebSocketHandler) -> None:
        connection = handler.ws_connection
        assert connection is not None, "add() a client once it is open"
        self.by_id[client_id] = (connection, connection.stream, connection.stream.socket)

    def remove(self, client_id: str) -> None:
        del self.by_id[client_id]

    def clear(self) -> None:
        self.by_id.clear()

    def __len__(self) -> int:
        return len(self.by_id)

    def handlers(self) -> dict[str, Any]:
        """Id -> handler, for tests that check this index against ``clients``."""
        return {client_id: target[0].handler for client_id, target in self.by_id.items()}

    def write_to_each(self, frame: bytes) -> tuple[int, list[Any]]:
        """Write ``frame`` to every open client; return how many it went to, and the handlers
        of the busy ones (their last frame still queued), which it skipped."""
        if not self.internals:
            return self.write_through_api(self.by_id.values(), frame)
        view = memoryview(frame)
        sent = 0
        busy = []
        for connection, stream, sock in list(self.by_id.values()):
            if connection.server_terminated:
                continue  # a close frame has gone out, or the connection broke: nothing follows
            if stream._total_write_index != stream._total_write_done_index:
                busy.append(connection.handler)  # bytes still queued
            else:
                sent += syscall_write(stream, sock, view)
        return sent, busy

    def write_to_one(self, client_id: str, frame: bytes) -> tuple[int, list[Any]]:
        """``write_to_each`` for the one client with this Id, if it is here."""
        target = self.by_id.get(client_id)
        if target is None:
            return 0, []
        return self.write_through_api([target], frame)

    @staticmethod
    def write_through_api(targets: Any, frame: bytes) -> tuple[int, list[Any]]:
        """The same loop through Tornado's public API: the fallback, and for a single client."""
        sent = 0
        busy = []
        for connection, stream, _ in list(targets):
            if connection.is_closing():
                continue
            if stream.writing():
                busy.append(connection.handler)
            else:
                stream.write(frame)
                sent += 1
        return sent, busy

    def check(
        self, stream_class: type[tornado.iostream.IOStream] = tornado.iostream.IOStream
    ) -> None:
        """Check once, on the loop, that what the fast loop reads means what it assumes;
        if not, warn and go through the public API from then on."""
        problem = internals_problem(stream_class)
        self.internals = problem is None
        if problem is not None:
            log.warning(
                "Tornado %s: %s; ticks go through Tornado's public API instead, which costs "
                "them more CPU (docs/performance.md)",
                tornado.version,
                problem,
            )


def internals_problem(stream_class: type[tornado.iostream.IOStream]) -> str | None:
    """Say what the fast loop would read wrongly on this Tornado, or None. Runs on the loop."""
    # A subclass of its own: a half-made instance of Tornado's class would set that class's
    # shared attribute layout, and every real connection would then keep a dict of its own
    # (about 0.8 KB more each).
    probe = type("Probe", (tornado.websocket.WebSocketProtocol13,), {})
    protocol = probe.__new__(probe)
    tornado.websocket.WebSocketProtocol.__init__(protocol, None)  # type: ignore[arg-type]
    if getattr(protocol, "server_terminated", None) is not False:
        return "a WebSocket connection has no server_terminated flag"
    if getattr(protocol, "handler", 0) is not None:
        return "a WebSocket connection does not keep its handler"
    near, far = socket.socketpair()
    stream = stream_class(near)
    try:
        for name in ("_total_write_index", "_total_write_done_index"):
            if not isinstance(getattr(stream, name, None), int):
                return f"an IOStream has no counter {name}"
        stream.write(b"x")  # the socket has room: written at once, nothing queued
        if stream.writing() or stream._total_write_index != stream._total_write_done_index:
            return "an IOStream's write counters differ while nothing is queued"
        # Fill the socket until the stream has to queue, as for a client that does not read.
        chunk = b"x" * 65536
        for _ in range(256):
            stream.write(chunk)
            if stream.writing():
                break
        if not stream.writing():
            return "an IOStream never says it is writing"
        if stream._total_write_index == stream._total_write_done_index:
            return "an IOStream's write counters are equal while it has bytes queued"
        if stream.socket is not near:
            return "an IOStream's socket is not the one it was made with"
    finally:
        stream.close()
        far.close()
    return None


def forget_handshake(handler: tornado.websocket.WebSocketHandler) -> None:
    """Let go of what only the handshake needed: 3.7 of the 14 KB a connection holds.

    Once open, a WebSocketHandler never writes HTTP again (Tornado disables those methods) and
    reads nothing more of its request. What stays is what Tornado's log line for an uncaught
    exception names: the method, URI, version, host and client address.
    """
    request = handler.request
    request.connection = None  # the HTTP/1.1 connection, handed over to the WebSocket
    request.server_connection = None
    request.headers.clear()  # the handshake's; Tornado's get() keeps the object itself
    request.arguments.clear()  # prepare() has taken the Id
    request.query_arguments.clear()
    handler._headers.clear()  # the 101 response's, sent
    handler.ui = None  # for templates, as Tornado itself does once the connection closes
