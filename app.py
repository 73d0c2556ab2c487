"""Push the server's time to every connected browser, once a second.

A thread-based WebSocket server in the shape of the classic Tornado tutorial:

- ``clients`` maps each client's ``Id`` (from ``/websocket?Id=...``) to its handler;
- ``IndexHandler`` serves the page that connects and shows the time;
- ``MyWebSocketHandler`` adds a connection to ``clients`` in ``open()`` and removes it in
  ``on_close()``;
- ``SendThread`` wakes at the turn of every second and pushes the time to every client.

Tornado's handlers and the ``clients`` dict belong to the IOLoop's thread. ``SendThread`` never
touches them: it hands each tick to the loop with ``IOLoop.add_callback``, the one IOLoop method
that is safe to call from another thread, and ``send_to_all`` does the writing there.

Left out on purpose: TLS (put a proxy in front) and authentication of the page. Several
processes (``--processes``), several machines (``--redis``, in ``cluster.py``) and ``POST /push``
are optional: without those options this is one process with the ``clients`` dict.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import hmac
import json
import logging
import math
import os
import signal
import socket
import struct
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import tornado.ioloop
import tornado.log
import tornado.netutil
import tornado.options
import tornado.process
import tornado.web
import tornado.websocket
from tornado.httpserver import HTTPServer
from tornado.options import define, options

define("port", default=8888, help="run on the given port", type=int)
define("address", default="127.0.0.1", help="listen on this address (0.0.0.0 for all)")
define("interval", default=1.0, help="seconds between ticks", type=float)
define("debug", default=False, help="reload on code changes, show tracebacks", type=bool)
define(
    "allowed_origins",
    default=[],
    multiple=True,
    help="origins allowed to connect, comma-separated, e.g. "
    "https://a.example,http://b.example:8080; empty means the page's own origin only",
)
define("max_message_size", default=64 * 1024, help="largest message in bytes", type=int)
define("max_messages_per_second", default=10, help="messages a client may send", type=int)
define("ping_interval", default=20.0, help="seconds between keep-alive pings", type=float)
define("ping_timeout", default=20.0, help="seconds to wait for a pong", type=float)
define("max_clients", default=10_000, help="connections served at once", type=int)
define(
    "slow_client_timeout",
    default=30.0,
    help="close a client that has not read a tick for this many seconds",
    type=float,
)
define(
    "processes",
    default=1,
    help="worker processes sharing the port; 0 means one per CPU; more than 1 needs --redis",
    type=int,
)
define("redis", default="", help="Redis URL shared by every node, e.g. redis://127.0.0.1:6379/0")
define(
    "redis_interval",
    default=1.0,
    help="seconds between a node's rounds with Redis (heartbeat, owner re-check)",
    type=float,
)

log = logging.getLogger("app")

MAX_ID_LENGTH = 64

# Close codes this server sends (RFC 6455 section 7.4; 4000-4999 are for applications).
CLOSE_GOING_AWAY = 1001  # the server is shutting down
CLOSE_UNSUPPORTED_DATA = 1003  # a binary message: this server only takes text
CLOSE_POLICY_VIOLATION = 1008  # too many messages, or ticks left unread
CLOSE_TOO_BIG = 1009  # sent by Tornado itself past websocket_max_message_size
CLOSE_REPLACED = 4000  # another connection took over this Id

MAX_PUSH_BYTES = 64 * 1024

# Client Id -> {"id": Id, "object": MyWebSocketHandler}. Only the IOLoop's thread touches it.
clients: dict[str, dict[str, Any]] = {}

# The cluster engine (cluster.Cluster) with --redis, else None: the Id is unique in this process.
cluster: Any = None


@dataclasses.dataclass
class Stats:
    """Counters for ``/stats``, kept by the IOLoop's thread."""

    started: float = dataclasses.field(default_factory=time.monotonic)
    ticks: int = 0
    ticks_sent: int = 0
    ticks_skipped_slow: int = 0
    ticks_skipped_late: int = 0
    messages_received: int = 0
    pushed: int = 0
    refused: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    closed: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    fanout_ms: collections.deque = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=100)
    )

    def as_dict(self) -> dict[str, Any]:
        figures = {
            "node": node_name(),
            "clients": len(clients),
            "uptime_seconds": round(time.monotonic() - self.started, 3),
            "ticks": self.ticks,
            "ticks_sent": self.ticks_sent,
            "ticks_skipped_slow": self.ticks_skipped_slow,
            "ticks_skipped_late": self.ticks_skipped_late,
            "messages_received": self.messages_received,
            "refused": dict(self.refused),
            "closed": dict(self.closed),
            "fanout_ms": [round(ms, 3) for ms in self.fanout_ms],
            "pushed": self.pushed,
        }
        if cluster is not None:
            figures.update(cluster.stats())
        return figures


stats = Stats()


def node_name() -> str:
    """A name for this process that no other process has: the host's name and the pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


def id_problem(client_id: str) -> str | None:
    """Say what is wrong with a client Id, or return None if it is fine.

    An Id is 1 to 64 printable characters: letters of any script, digits, punctuation and
    spaces, but no control characters such as a newline.
    """
    if not client_id:
        return "Missing Id query argument"
    if len(client_id) > MAX_ID_LENGTH:
        return f"Id longer than {MAX_ID_LENGTH} characters"
    if not client_id.isprintable():
        return "Id contains control characters"
    return None


def origin_key(origin: str) -> tuple[str, str, int | None] | None:
    """Reduce an origin to (scheme, host, port) with the default port filled in."""
    try:
        parts = urlsplit(origin.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return None
    default_port = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname, port or default_port


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


class IndexHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.render("index.html", interval=self.settings["interval"])


class StatsHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write(stats.as_dict())


class MyWebSocketHandler(tornado.websocket.WebSocketHandler):
    # Our own state lives in slots, not in the instance __dict__: Tornado already keeps 27
    # attributes there, and past 28 CPython stops sharing the dict's keys between instances,
    # which costs 1.3 KB more a connection (docs/performance.md).
    __slots__ = ("client_id", "tokens", "tokens_at", "undrained_since")

    def initialize(self) -> None:
        self.client_id = ""
        self.undrained_since: float | None = None

    def prepare(self) -> None:
        # Refuse before the handshake, so the client gets an HTTP status and a reason
        # rather than an open connection that is dropped without a word. Read the raw
        # bytes: get_argument() would quietly turn most control characters into spaces,
        # and answer bytes that are not UTF-8 with a bare "Bad Request".
        raw_id = (self.request.query_arguments.get("Id") or [b""])[-1]
        try:
            client_id = raw_id.decode("utf-8")
            problem = id_problem(client_id)
        except UnicodeDecodeError:
            client_id = raw_id.decode("utf-8", "backslashreplace")
            problem = "Id is not valid UTF-8"
        if problem is not None:
            stats.refused["missing_id" if not client_id else "bad_id"] += 1
            raise tornado.web.HTTPError(400, "%s: %r", problem, client_id[:100], reason=problem)
        if len(clients) >= self.settings["max_clients"] and client_id not in clients:
            stats.refused["full"] += 1
            raise tornado.web.HTTPError(503, reason="Server full, try again later")
        self.client_id = client_id

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code} {self._reason}\n")

    def check_origin(self, origin: str) -> bool:
        # Tornado's own check admits a page served by this server (its origin matches Host).
        ok = (
            super().check_origin(origin)
            or origin_key(origin) in self.settings["allowed_origin_keys"]
        )
        if not ok:
            stats.refused["origin"] += 1
            log.warning("Refused a connection from origin %r", origin[:200])
        return ok

    def open(self) -> None:
        self.set_nodelay(True)
        self.tokens = float(self.settings["max_messages_per_second"])
        self.tokens_at = time.monotonic()
        old = clients.get(self.client_id)
        if old is not None:
            stats.closed["replaced"] += 1
            old["object"].close(CLOSE_REPLACED, "Replaced by a newer connection with the same Id")
        clients[self.client_id] = {"id": self.client_id, "object": self}
        log.info("Client %r connected (%d connected)", self.client_id, len(clients))
        if cluster is not None:
            cluster.claim(self.client_id)  # and close an older one on another node

    def on_message(self, message: str | bytes) -> None:
        if self.ws_connection is None or self.ws_connection.is_closing():
            return  # a flood keeps arriving for a moment after we said goodbye
        stats.messages_received += 1
        if isinstance(message, bytes):
            stats.closed["binary"] += 1
            log.warning("Client %r sent %d bytes of binary data", self.client_id, len(message))
            self.close(CLOSE_UNSUPPORTED_DATA, "Only text messages are accepted")
            return
        if not self.take_token():
            stats.closed["flood"] += 1
            log.warning("Client %r sends too many messages", self.client_id)
            self.close(CLOSE_POLICY_VIOLATION, "Too many messages")
            return
        # %r escapes newlines and control characters, so a message cannot forge a log line.
        log.info("Message from %r (%d chars): %r", self.client_id, len(message), message[:200])

    def take_token(self) -> bool:
        """Token bucket: allow a burst of max_messages_per_second, refilled at that rate."""
        rate = self.settings["max_messages_per_second"]
        now = time.monotonic()
        self.tokens = min(rate, self.tokens + (now - self.tokens_at) * rate)
        self.tokens_at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def on_close(self) -> None:
        # Remove our own entry only: after a takeover the Id belongs to the newer connection.
        entry = clients.get(self.client_id)
        if entry is not None and entry["object"] is self:
            del clients[self.client_id]
        log.info(
            "Client %r left (code %r, reason %r; %d connected)",
            self.client_id,
            self.close_code,
            self.close_reason,
            len(clients),
        )
        if cluster is not None and entry is not None and entry["object"] is self:
            cluster.release(self.client_id)

    def send_frame(self, frame: bytes, now: float) -> bool:
        """Write an encoded tick and say whether it went; skip it if the last is still unread."""
        stream = self.ws_connection.stream  # type: ignore[union-attr]
        if stream.writing():
            # Only the newest time matters, so never queue a second tick behind the first.
            stats.ticks_skipped_slow += 1
            if self.undrained_since is None:
                self.undrained_since = now
            elif now - self.undrained_since > self.settings["slow_client_timeout"]:
                stats.closed["slow"] += 1
                log.warning("Client %r has not read a tick for a while", self.client_id)
                self.close(CLOSE_POLICY_VIOLATION, "Not reading ticks")
            return False
        self.undrained_since = None
        # One system call while the socket has room; the IOStream queues whatever is left
        # and keeps the bytes in order.
        try:
            sent = stream.write_to_fd(memoryview(frame))
        except BlockingIOError:
            sent = 0
        except OSError:
            stream.close()  # the peer is gone; on_close cleans up
            return False
        if sent < len(frame):
            stream.write(frame[sent:])
        return True


def send_to_all(text: str) -> None:
    """Send one tick to every client. Runs on the IOLoop's thread, called via add_callback."""
    started = time.perf_counter()
    frame = encode_text_frame(text)  # encoded once, the same bytes for everyone
    now = time.monotonic()
    sent = 0
    for entry in list(clients.values()):
        handler = entry["object"]
        connection = handler.ws_connection
        if connection is not None and not connection.is_closing():
            sent += handler.send_frame(frame, now)
    stats.ticks += 1
    stats.ticks_sent += sent
    stats.fanout_ms.append((time.perf_counter() - started) * 1000)


def count_late_ticks(missed: int) -> None:
    stats.ticks_skipped_late += missed


def deliver_to_all(text: str) -> int:
    """Write a pushed ``text`` to every client as a tick is written; return how many got it."""
    frame = encode_text_frame(text)  # encoded once, the same bytes for everyone
    now = time.monotonic()
    sent = 0
    for entry in list(clients.values()):
        handler = entry["object"]
        connection = handler.ws_connection
        if connection is not None and not connection.is_closing():
            sent += handler.send_frame(frame, now)
    stats.pushed += sent
    return sent


def deliver_to_one(client_id: str, text: str) -> int:
    """Write ``text`` to the local client with this Id as a tick is written; return 1 or 0."""
    entry = clients.get(client_id)
    connection = entry["object"].ws_connection if entry else None
    if connection is None or connection.is_closing():
        return 0
    sent = entry["object"].send_frame(encode_text_frame(text), time.monotonic())
    stats.pushed += sent
    return int(sent)


def close_client(client_id: str, code: int, reason: str) -> None:
    """Close the local client with this Id: another node took the Id over."""
    entry = clients.get(client_id)
    if entry is not None:
        stats.closed["replaced"] += 1
        entry["object"].close(code, reason)


async def push(client_id: str | None, text: str) -> int | None:
    """Send ``text`` to one client (or all, for None) wherever it is; return how many got it.

    None means no client with this Id is connected. A client that has not read its last
    message is skipped, as for a tick.
    """
    if cluster is not None:
        return await cluster.push(client_id, text)
    if client_id is None:
        return deliver_to_all(text)
    if client_id not in clients:
        return None
    return deliver_to_one(client_id, text)


@tornado.web.stream_request_body
class PushHandler(tornado.web.RequestHandler):
    """``POST /push`` with ``{"Id": ..., "message": ...}``, or without ``Id`` for everyone.

    Off (404) unless the PUSH_TOKEN environment variable is set; then it takes only requests
    that carry ``Authorization: Bearer <that token>``. The body is read as it arrives, so that
    one over the limit is refused without being kept in memory.
    """

    def prepare(self) -> None:
        token = self.settings["push_token"]
        if not token:
            raise tornado.web.HTTPError(404)
        given = self.request.headers.get("Authorization", "")
        # In constant time, so that the time to answer does not hint at the token.
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise tornado.web.HTTPError(401, reason="Missing or wrong token")
        length = self.request.headers.get("Content-Length", "0")
        if not length.isdigit() or int(length) > MAX_PUSH_BYTES:
            raise tornado.web.HTTPError(413, reason=f"Body over {MAX_PUSH_BYTES} bytes")
        self.body = bytearray()
        self.too_big = False

    def data_received(self, chunk: bytes) -> None:
        if len(self.body) + len(chunk) > MAX_PUSH_BYTES:
            self.too_big = True  # a chunked body: keep reading, stop keeping
        else:
            self.body += chunk

    async def post(self) -> None:
        if self.too_big:
            raise tornado.web.HTTPError(413, reason=f"Body over {MAX_PUSH_BYTES} bytes")
        try:
            request = json.loads(self.body)
        except ValueError:  # UnicodeDecodeError included
            raise tornado.web.HTTPError(400, reason="Body is not JSON") from None
        if not isinstance(request, dict) or not isinstance(request.get("message"), str):
            raise tornado.web.HTTPError(400, reason='Missing "message" (a string)')
        client_id = request.get("Id")
        if "Id" in request and (not isinstance(client_id, str) or id_problem(client_id)):
            raise tornado.web.HTTPError(400, reason='"Id" is not a valid Id')
        try:
            reached = await push(client_id, request["message"])
        except ConnectionError:
            raise tornado.web.HTTPError(503, reason="Cluster link down, try again") from None
        if reached is None:
            raise tornado.web.HTTPError(404, reason="No client with this Id is connected")
        self.write({"reached": reached})

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 401:
            self.set_header("WWW-Authenticate", "Bearer")
        self.finish({"error": self._reason})


class SendThread(threading.Thread):
    """Wake at every multiple of ``interval`` on the wall clock and hand the time to the loop."""

    def __init__(self, io_loop: tornado.ioloop.IOLoop, interval: float = 1.0) -> None:
        super().__init__(name="SendThread", daemon=True)
        self.io_loop = io_loop
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        # Aim at whole multiples of the interval (the turn of each second by default), and
        # compute each target from a tick number rather than by adding up sleeps, so the
        # schedule cannot drift.
        tick = math.floor(time.time() / self.interval) + 1
        while not self.stopping.is_set():
            delay = tick * self.interval - time.time()
            if delay > self.interval:
                # The wall clock was set back: aim at the next boundary from now on.
                tick = math.floor(time.time() / self.interval) + 1
                continue
            if delay > 0:
                self.stopping.wait(delay)
                continue
            missed = math.floor(-delay / self.interval)
            if missed:
                # Woken far too late (the machine was paused): send the current time once
                # instead of a burst of stale ones.
                tick += missed
                self.io_loop.add_callback(count_late_ticks, missed)
            # The thread only hands over the text; the loop's thread does every write.
            self.io_loop.add_callback(send_to_all, str(datetime.datetime.now()))
            tick += 1

    def stop(self) -> None:
        self.stopping.set()


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Log a request as Tornado does, except that a 503 when full is a warning, not an error.

    Turning a client away is the server working as designed, like the other refusals (4xx).
    """
    status = handler.get_status()
    if status < 400:
        log_method = tornado.log.access_log.info
    elif status < 500 or status == 503:
        log_method = tornado.log.access_log.warning
    else:
        log_method = tornado.log.access_log.error
    request = handler.request
    log_method(
        "%d %s %s (%s) %.2fms",
        status,
        request.method,
        request.uri,
        request.remote_ip,
        1000.0 * request.request_time(),
    )


def make_app(**settings: Any) -> tornado.web.Application:
    """Build the application; keyword arguments override settings taken from the options."""
    here = os.path.dirname(os.path.abspath(__file__))
    app_settings: dict[str, Any] = dict(
        template_path=os.path.join(here, "templates"),
        static_path=os.path.join(here, "static"),
        debug=options.debug,
        interval=options.interval,
        allowed_origins=options.allowed_origins,
        max_clients=options.max_clients,
        max_messages_per_second=options.max_messages_per_second,
        slow_client_timeout=options.slow_client_timeout,
        websocket_max_message_size=options.max_message_size,
        websocket_ping_interval=options.ping_interval,
        websocket_ping_timeout=options.ping_timeout,
        log_function=log_request,
        push_token=os.environ.get("PUSH_TOKEN", ""),
    )
    app_settings.update(settings)
    allowed = app_settings["allowed_origins"]
    malformed = [origin for origin in allowed if origin_key(origin) is None]
    if malformed:
        raise ValueError(f"not an origin (scheme://host[:port]): {malformed!r}")
    app_settings["allowed_origin_keys"] = frozenset(origin_key(origin) for origin in allowed)
    return tornado.web.Application(
        [
            (r"/", IndexHandler),
            (r"/websocket", MyWebSocketHandler),
            (r"/stats", StatsHandler),
            (r"/push", PushHandler),
        ],
        **app_settings,
    )


async def close_all(code: int, reason: str, timeout: float) -> None:
    """Close every client and wait, up to ``timeout`` seconds, for them to answer."""
    for entry in list(clients.values()):
        entry["object"].close(code, reason)
    stats.closed["shutdown"] += len(clients)
    deadline = time.monotonic() + timeout
    while clients and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


async def serve(app: tornado.web.Application, sockets: list[socket.socket] | None = None) -> None:
    """Serve until a signal; ``sockets`` are given when a parent process bound them."""
    if sockets is None:
        sockets = tornado.netutil.bind_sockets(options.port, options.address)
        host, port = sockets[0].getsockname()[:2]
        log.info("Listening on http://%s:%d/", host, port)
    # A handshake left half-sent must not hold its socket for Tornado's default hour.
    server = HTTPServer(app, idle_connection_timeout=30)
    server.add_sockets(sockets)

    # A signal only sets an event; the shutdown itself runs here, on the loop.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: loop.call_soon_threadsafe(stop.set))
    if stop_requested:  # a signal reached this worker before the line above
        stop.set()
    if options.redis:
        start_cluster()

    thread = SendThread(tornado.ioloop.IOLoop.current(), options.interval)
    thread.start()
    await stop.wait()

    log.info("Shutting down")
    thread.stop()
    thread.join()
    server.stop()
    await close_all(CLOSE_GOING_AWAY, "Server shutting down", timeout=1.0)
    if cluster is not None:
        await cluster.stop()


def start_cluster() -> None:
    """Join the cluster of nodes that share --redis (on the loop, after any fork)."""
    global cluster
    import cluster as engine  # optional: needs the redis extra

    cluster = engine.Cluster(
        options.redis,
        node=node_name(),
        deliver=deliver_to_one,
        deliver_all=deliver_to_all,
        close=close_client,
        takeover=(CLOSE_REPLACED, "Replaced by a newer connection with the same Id"),
        local_stats=lambda: {
            "clients": len(clients),
            "ticks_sent": stats.ticks_sent,
            "refused": dict(stats.refused),
        },
        interval=options.redis_interval,
    )
    cluster.start()


# Set when a worker process is told to stop before it has installed its own handler.
stop_requested = False


def serve_processes(app: tornado.web.Application, count: int) -> None:
    """Bind the port, fork ``count`` workers that share it, and run ``serve`` in each.

    Nothing before the fork may make an event loop, a thread or a Redis connection: a child
    would get a copy that does not work. Each worker makes its own after the fork, in serve().
    """
    sockets = tornado.netutil.bind_sockets(options.port, options.address)
    host, port = sockets[0].getsockname()[:2]
    log.info("Listening on http://%s:%d/", host, port)
    # fork_processes only waits on its children: pass Ctrl-C and SIGTERM on to them through
    # the process group. A terminal's Ctrl-C reaches the whole group anyway, so become the
    # group's leader only when started inside someone else's group (a supervisor's).
    parent = os.getpid()
    if os.getpgrp() != parent:
        os.setpgrp()

    def forward(signum: int, frame: Any) -> None:
        global stop_requested
        if os.getpid() != parent:
            stop_requested = True  # a worker, between the fork and serve()
            return
        for name in (signal.SIGINT, signal.SIGTERM):
            signal.signal(name, signal.SIG_IGN)  # killpg sends it back to us too
        os.killpg(os.getpgrp(), signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    # Returns only in the children; the parent exits 0 when every child has exited 0, and
    # restarts (and logs) a child that dies from a signal or exits with an error.
    tornado.process.fork_processes(count)
    asyncio.run(serve(app, sockets))


def main(argv: list[str] | None = None) -> None:
    """Run the server; ``argv`` are the command-line words after the program name."""
    tornado.options.parse_command_line([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    try:
        app = make_app()
    except ValueError as error:
        sys.exit(f"app.py: {error}")
    if options.redis:
        check_redis()
    if options.processes == 1:
        asyncio.run(serve(app))
    else:
        check_processes()
        serve_processes(app, options.processes)


def check_redis() -> None:
    """Refuse --redis without the redis package, or with a URL that is not one."""
    try:
        import cluster as engine  # only a module: it connects to nothing until started
    except ImportError as error:
        sys.exit(f"app.py: --redis needs the redis package ({error}): pip install -e '.[redis]'")
    problem = engine.url_problem(options.redis)
    if problem:
        sys.exit(f"app.py: --redis: {problem}")


def check_processes() -> None:
    """Refuse a --processes setting that cannot work."""
    if options.processes < 0:
        sys.exit("app.py: --processes must be 0 (one per CPU) or more")
    if not options.redis:
        sys.exit(
            "app.py: --processes other than 1 needs --redis: each process keeps its own "
            "clients, and only a registry they share keeps an Id unique across them"
        )
    if options.debug:
        sys.exit("app.py: --debug reloads the code, which several processes cannot do")


if __name__ == "__main__":
    main()
