"""Push the server's time to every connected browser, once a second.

A thread-based WebSocket server in the shape of the classic Tornado tutorial:

- ``clients`` maps each client's ``Id`` (from ``/websocket?Id=...``) to its handler;
  ``targets`` holds the same clients in the form the tick's loop goes through fastest;
- ``IndexHandler`` serves the page that connects and shows the time;
- ``ClockHandler`` tells the page the zone of that time, which the pushed text leaves out;
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
import errno
import hmac
import ipaddress
import json
import logging
import math
import os
import re
import secrets
import signal
import socket
import struct
import sys
import threading
import time
import zoneinfo
from typing import Any
from urllib.parse import urlsplit

try:
    import resource
except ImportError:  # Windows has no descriptor limit to raise
    resource = None  # type: ignore[assignment]

import tornado.httputil
import tornado.ioloop
import tornado.iostream
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
define(
    "xheaders",
    default=False,
    help="behind a proxy: take the client's address and scheme from X-Real-Ip, "
    "X-Forwarded-For and X-Forwarded-Proto (only safe if nothing else can reach this port)",
    type=bool,
)
define("interval", default=1.0, help="seconds between ticks", type=float)
define("debug", default=False, help="reload on code changes, show tracebacks", type=bool)
define(
    "allowed_origins",
    default=[],
    multiple=True,
    help="origins allowed to connect, comma-separated, e.g. "
    "https://a.example,http://b.example:8080; empty means the page's own origin only",
)
define(
    "allowed_hosts",
    default=[],
    multiple=True,
    help="host names this server answers to besides the local ones, comma-separated, e.g. "
    "clock.example,*.apps.example; * answers to any",
)
define(
    "cookie_secret",
    default="",
    help="hand out Ids signed with this secret (or set COOKIE_SECRET), so that a client "
    "cannot take over another's Id; at least 32 characters",
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
    "log_window",
    default=10.0,
    help="seconds in which the first 5 warnings of each kind are logged; one line counts the rest",
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

LOG_BURST = 5  # warnings of one kind logged in full per --log_window
# Where clients can make warnings: ours, and Tornado's for requests and connections.
LIMITED_LOGGERS = ("app", "tornado.access", "tornado.general", "tornado.application")

# Descriptors kept back from --max_clients: about ten the process holds itself (standard streams,
# the event loop, the listening sockets, a spare), and room for handshakes under way, /stats
# requests and refused clients that have not hung up yet.
RESERVED_DESCRIPTORS = 64
ACCEPT_PAUSE = 0.1  # seconds to stop accepting after accept() ran out of descriptors
ACCEPTS_PER_TURN = 128  # as Tornado's own accept loop: let other work run between batches
# The names a browser on this machine reaches a loopback server by. A page on another site that
# has its own name pointed at 127.0.0.1 (DNS rebinding) still sends its own name as the Host.
LOCAL_HOSTS = ("localhost", "*.localhost", "127.0.0.1", "[::1]")
# A Host header: a name or a bracketed IPv6 address, then an optional port.
HOST_HEADER = re.compile(r"([a-z0-9_-]+(?:\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\])(?::\d{1,5})?")
# An entry of --allowed_hosts: a name, *.name for every name below it, or * for any.
HOST_PATTERN = re.compile(r"\*|(?:\*\.)?[a-z0-9_-]+(?:\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\]")

# With --cookie_secret the Id lives in a signed cookie rather than in a token that the page
# adds to the WebSocket's URL: the browser sends the cookie with the handshake by itself, so no
# signature ever stands in a URL, where access logs and proxies would record it; HttpOnly keeps
# it from the page's scripts, and SameSite from other sites' pages. The price: a cookie belongs
# to the whole browser, so all its tabs share one Id, and the newest tab takes it over.
ID_COOKIE = "clock_id"
ID_MAX_AGE_DAYS = 30
MIN_SECRET_LENGTH = 32

# Close codes this server sends (RFC 6455 section 7.4; 4000-4999 are for applications).
CLOSE_GOING_AWAY = 1001  # the server is shutting down
CLOSE_UNSUPPORTED_DATA = 1003  # a binary message: this server only takes text
CLOSE_POLICY_VIOLATION = 1008  # too many messages, or ticks left unread
CLOSE_TOO_BIG = 1009  # sent by Tornado itself past websocket_max_message_size
CLOSE_REPLACED = 4000  # another connection took over this Id

ORIGIN_REFUSED = "Origin does not match Host: a proxy must pass Host, or use --allowed_origins"
MAX_PUSH_BYTES = 64 * 1024

# Client Id -> {"id": Id, "object": MyWebSocketHandler}. Only the IOLoop's thread touches it.
clients: dict[str, dict[str, Any]] = {}
# The same Ids -> (WebSocket connection, its stream, its socket), for the tick's loop: going
# from one tuple to the next is cheaper than going from each entry to its handler, connection,
# stream and socket, objects scattered in memory. Only add_client() and remove_client() change
# either dict, so that they always hold the same clients.
targets: dict[
    str, tuple[tornado.websocket.WebSocketProtocol, tornado.iostream.IOStream, socket.socket]
] = {}


def add_client(handler: MyWebSocketHandler) -> None:
    """Put a newly opened client in ``clients``, in the place of any with its Id."""
    clients[handler.client_id] = {"id": handler.client_id, "object": handler}
    connection = handler.ws_connection
    stream = connection.stream  # type: ignore[union-attr]
    # The socket is kept from the start: once the stream closes, stream.socket is None, while
    # this socket object stays and refuses a send() with an OSError.
    targets[handler.client_id] = (connection, stream, stream.socket)  # type: ignore[arg-type]


def remove_client(handler: MyWebSocketHandler) -> bool:
    """Take a closed client out of ``clients``, unless a newer one has taken over its Id;
    say whether it was taken out."""
    entry = clients.get(handler.client_id)
    if entry is None or entry["object"] is not handler:
        return False
    del clients[handler.client_id]
    del targets[handler.client_id]
    return True


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
    accept_paused: int = 0
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
            "accept_paused": self.accept_paused,
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


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    """Whether a Host header names a host that ``patterns`` (``HOST_PATTERN``) allow, any port."""
    found = HOST_HEADER.fullmatch(host.lower())
    if found is None:
        return False
    name = found.group(1)
    return any(
        pattern in ("*", name) or (pattern.startswith("*.") and name.endswith(pattern[1:]))
        for pattern in patterns
    )


def is_loopback(address: str) -> bool:
    """Whether listening on ``address`` keeps other machines out."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False  # a host name, or "" for every interface


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

    def prepare(self) -> None:
        # With --cookie_secret the server, not the page, picks the Id (see ID_COOKIE).
        self.client_id = self.hand_out_id() if self.settings["cookie_secret"] else ""

    def hand_out_id(self) -> str:
        """The Id this browser's signed cookie holds, or a new one; signed afresh either way."""
        signed = self.get_signed_cookie(ID_COOKIE, max_age_days=ID_MAX_AGE_DAYS)
        client_id = signed.decode() if signed else secrets.token_urlsafe(12)
        self.set_signed_cookie(
            ID_COOKIE, client_id, expires_days=ID_MAX_AGE_DAYS, httponly=True, samesite="Strict"
        )
        return client_id


class RefusedHandler(tornado.web.RequestHandler):
    """Answer any request with one status and reason, as plain text."""

    def initialize(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason

    def prepare(self) -> None:
        self.set_status(self.status, self.reason)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{self.status} {self.reason}\n")


class ClockHandler(tornado.web.RequestHandler):
    """The server's UTC offset and zone now, as JSON: the pushed text carries no zone.

    Computed on every request, so a page that asks again after a daylight-saving change
    gets the new offset.
    """

    def get(self) -> None:
        now = datetime.datetime.now().astimezone()
        offset = now.utcoffset() or datetime.timedelta()
        self.set_header("Cache-Control", "no-store")
        self.write(
            {
                "utc_offset_seconds": round(offset.total_seconds()),
                "abbreviation": now.tzname(),
                "zone": self.zone_name(now),
            }
        )

    @staticmethod
    def zone_name(now: datetime.datetime) -> str | None:
        """The IANA name of the local zone ("Asia/Shanghai"), from TZ or /etc/localtime."""
        setting = os.environ.get("TZ")
        if setting is None:
            try:
                setting = os.readlink("/etc/localtime")  # -> /usr/share/zoneinfo/Area/City
            except OSError:
                return None
        name = setting.lstrip(":").rpartition("zoneinfo/")[2]
        try:
            zone = zoneinfo.ZoneInfo(name)
        except (ValueError, OSError, zoneinfo.ZoneInfoNotFoundError):
            return None  # a POSIX rule such as "CST-8" names no zone
        # Trust the name only if it gives the offset this process is actually using.
        return name if now.astimezone(zone).utcoffset() == now.utcoffset() else None


class StatsHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write({**stats.as_dict(), "max_clients": self.settings["max_clients"]})


class MyWebSocketHandler(tornado.websocket.WebSocketHandler):
    # Our own state lives in slots, not in the instance __dict__: Tornado already fills that
    # dict, and a few more keys would make CPython stop sharing its keys between instances,
    # so that every connection paid for its own (docs/performance.md has the figures).
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
        if self.settings["cookie_secret"]:
            problem = self.signature_problem(client_id)
            if problem is not None:
                stats.refused["signature"] += 1
                log.warning("Refused Id %r: %s", client_id[:100], problem)
                raise tornado.web.HTTPError(403, reason=problem)

    def signature_problem(self, client_id: str) -> str | None:
        """Say what is wrong with the handshake's signed cookie for ``client_id``, or None."""
        cookie = self.get_cookie(ID_COOKIE)
        if not cookie:
            return "Missing signature for the Id: load the page first"
        secret = self.settings["cookie_secret"]
        signed = tornado.web.decode_signed_value(secret, ID_COOKIE, cookie, ID_MAX_AGE_DAYS)
        if signed is None:
            # Tornado says only "not valid"; a second look without an age limit tells why.
            if tornado.web.decode_signed_value(secret, ID_COOKIE, cookie, math.inf):
                return "Signature expired: reload the page"
            return "Signature not valid (forged or tampered)"
        if signed != client_id.encode():
            return "Signature is for another Id"
        return None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code} {self._reason}\n")

    def check_origin(self, origin: str) -> bool:
        # Tornado's own check admits a page served by this server (its origin matches Host).
        if (
            super().check_origin(origin)
            or origin_key(origin) in self.settings["allowed_origin_keys"]
        ):
            return True
        stats.refused["origin"] += 1
        # Behind a proxy that rewrites Host (nginx's own example does), the page's origin
        # never matches it: say so in the first line the operator reads.
        log.warning(
            "Refused a connection from origin %r: it does not match Host %r. If the page "
            "comes through a proxy, pass the Host header on (nginx: proxy_set_header Host "
            "$http_host;) or allow that origin with --allowed_origins=...",
            origin[:200],
            self.request.headers.get("Host", "")[:200],
        )
        # Raised rather than returning False, so that the 403 carries a reason of its own.
        raise tornado.web.HTTPError(403, reason=ORIGIN_REFUSED)

    def open(self) -> None:
        self.forget_handshake()
        self.set_nodelay(True)
        self.tokens = float(self.settings["max_messages_per_second"])
        self.tokens_at = time.monotonic()
        old = clients.get(self.client_id)
        if old is not None:
            stats.closed["replaced"] += 1
            old["object"].close(CLOSE_REPLACED, "Replaced by a newer connection with the same Id")
        add_client(self)
        log.info("Client %r connected (%d connected)", self.client_id, len(clients))
        if cluster is not None:
            cluster.claim(self.client_id)  # and close an older one on another node

    def forget_handshake(self) -> None:
        """Let go of what only the handshake needed: 3.7 of the 14 KB a connection holds.

        Once open, a WebSocketHandler never writes HTTP again (Tornado disables those methods)
        and reads nothing more of its request. What stays is what Tornado's log line for an
        uncaught exception names: the method, URI, version, host and client address.
        """
        request = self.request
        request.connection = None  # the HTTP/1.1 connection, handed over to the WebSocket
        request.server_connection = None
        request.headers.clear()  # the handshake's; Tornado's get() keeps the object itself
        request.arguments.clear()  # prepare() has taken the Id
        request.query_arguments.clear()
        self._headers.clear()  # the 101 response's, sent
        self.ui = None  # for templates, as Tornado itself does once the connection closes

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
        removed = remove_client(self)
        log.info(
            "Client %r left (code %r, reason %r; %d connected)",
            self.client_id,
            self.close_code,
            self.close_reason,
            len(clients),
        )
        if cluster is not None and removed:
            cluster.release(self.client_id)

    def send_frame(self, frame: bytes, now: float) -> bool:
        """Write an encoded frame (a tick or a push) and say whether it went; skip it if the
        last one is still unread."""
        # Below Tornado's public API (hence tornado<7): one frame built once for everyone, one
        # system call per client. A push to one client comes this way too, to be skipped alike.
        stream = self.ws_connection.stream  # type: ignore[union-attr]
        if stream.closed():
            return False  # the connection has not noticed yet; on_close() follows
        if stream.writing():
            # Only the newest time matters, so never queue a second tick behind the first.
            stats.ticks_skipped_slow += 1
            if self.undrained_since is None:
                self.undrained_since = now
                # Told when the stream has sent everything queued so far, so that the tick's
                # loop need not look at this handler to end the count.
                stream.write(b"").add_done_callback(self.drained)
            elif now - self.undrained_since > self.settings["slow_client_timeout"]:
                stats.closed["slow"] += 1
                log.warning("Client %r has not read a tick for a while", self.client_id)
                self.close(CLOSE_POLICY_VIOLATION, "Not reading ticks")
            return False
        return write_frame(stream, stream.socket, memoryview(frame))

    def drained(self, future: asyncio.Future[None]) -> None:
        self.undrained_since = None


def write_frame(stream: tornado.iostream.IOStream, sock: socket.socket, frame: memoryview) -> bool:
    """Write a frame to a stream that has nothing pending; say whether it went."""
    # One system call while the socket has room; the IOStream queues whatever is left and keeps
    # the bytes in order. The frame goes to the socket itself, as IOStream.write_to_fd() would
    # send it: the server speaks plain TCP, and TLS ends at the proxy in front.
    try:
        sent = sock.send(frame)
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
    sent = write_to_all(encode_text_frame(text))  # encoded once, the same bytes for everyone
    stats.ticks += 1
    stats.ticks_sent += sent
    stats.fanout_ms.append((time.perf_counter() - started) * 1000)


def write_to_all(frame: bytes) -> int:
    """Write an encoded frame to every open client; return how many it went to."""
    view = memoryview(frame)
    now = time.monotonic()
    sent = 0
    # Attributes are read where is_closing() and writing() would be called: with 10,000
    # clients, those calls cost the tick about a tenth more CPU (docs/performance.md).
    for connection, stream, sock in list(targets.values()):
        if connection.server_terminated:
            continue  # a close frame has gone out, or the connection broke: nothing may follow
        if stream._total_write_index != stream._total_write_done_index:
            # Bytes are still queued: the slow-consumer rule decides.
            sent += connection.handler.send_frame(frame, now)
        else:
            sent += write_frame(stream, sock, view)
    return sent


def count_late_ticks(missed: int) -> None:
    stats.ticks_skipped_late += missed


def deliver_to_all(text: str) -> int:
    """Write a pushed ``text`` to every client as a tick is written; return how many got it."""
    sent = write_to_all(encode_text_frame(text))
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


@dataclasses.dataclass
class LogWindow:
    """The warnings of one kind since its window started."""

    started: float
    first: logging.LogRecord
    count: int = 0


class LogLimit(logging.Filter):
    """Let the first few warnings of each kind through in a window of time, then count the rest.

    A client can be refused thousands of times a second, and every refusal logs a warning or
    two. On a logger, this filter passes the first LOG_BURST lines of each kind (from the same
    logging call, and with the same ``kind`` if the call gives one in ``extra``) in every
    ``window`` seconds as they are, holds the rest back, and at the end of the window
    logs one line saying how many there were. The log then grows by a bounded amount whatever
    clients do; ``/stats`` keeps the exact counts. Lines below WARNING pass untouched
    (``--logging=warning`` quiets those). It runs on the IOLoop's thread, like the handlers.
    """

    def __init__(self, window: float) -> None:
        super().__init__()
        self.window = window
        self.windows: dict[tuple[Any, ...], LogWindow] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or getattr(record, "summary", False):
            return True
        kind = (record.name, record.pathname, record.lineno, getattr(record, "kind", None))
        now = time.monotonic()
        window = self.windows.get(kind)
        if window is not None and now - window.started >= self.window:
            self.summarise(kind, window)  # its timer has not run yet: end it here
            window = None
        if window is None:
            window = self.windows[kind] = LogWindow(now, record)
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                pass  # logged before the loop runs: the next line of its kind ends the window
            else:
                loop.call_later(self.window, self.summarise, kind, window)
        window.count += 1
        return window.count <= LOG_BURST

    def summarise(self, kind: tuple[Any, ...], window: LogWindow) -> None:
        """End a window: forget it, and say how many lines it held back."""
        if self.windows.get(kind) is not window:
            return  # already ended
        del self.windows[kind]
        if window.count > LOG_BURST:
            seconds = min(time.monotonic() - window.started, self.window)
            logging.getLogger(window.first.name).log(
                window.first.levelno,
                "%s more lines like %r in the last %.3g s",
                f"{window.count - LOG_BURST:,}",
                window.first.getMessage()[:200],
                seconds,
                extra={"summary": True},
            )

    def flush(self) -> None:
        """End every window now, as the server stops."""
        for kind, window in list(self.windows.items()):
            self.summarise(kind, window)


def limit_warnings(window: float) -> LogLimit:
    """Put one LogLimit on every logger that clients can make write."""
    limit = LogLimit(window)
    for name in LIMITED_LOGGERS:
        logging.getLogger(name).addFilter(limit)
    return limit


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
        extra={"kind": status},  # LogLimit counts each status apart
    )


class Application(tornado.web.Application):
    """Tornado's Application, refusing a request for a host name it does not answer to."""

    def find_handler(
        self, request: tornado.httputil.HTTPServerRequest, **kwargs: Any
    ) -> tornado.httputil.HTTPMessageDelegate:
        # Every request passes here before any handler runs, static files included. The Origin
        # check cannot stop a rebound name: there the page's origin and Host agree.
        patterns = self.settings["host_patterns"]
        if patterns and not host_allowed(request.host, patterns):
            stats.refused["host"] += 1
            log.warning("Refused a request for host %r", request.host[:200])
            # Tornado has refused a Host with anything but URI characters, so %r is safe here.
            reason = f"Host not allowed: {request.host[:100]!r}"
            refusal = {"status": 403, "reason": reason}
            return self.get_handler_delegate(request, RefusedHandler, refusal)
        return super().find_handler(request, **kwargs)


def make_app(**settings: Any) -> tornado.web.Application:
    """Build the application; keyword arguments override settings taken from the options."""
    here = os.path.dirname(os.path.abspath(__file__))
    app_settings: dict[str, Any] = dict(
        template_path=os.path.join(here, "templates"),
        static_path=os.path.join(here, "static"),
        debug=options.debug,
        interval=options.interval,
        allowed_origins=options.allowed_origins,
        address=options.address,
        allowed_hosts=options.allowed_hosts,
        cookie_secret=options.cookie_secret or os.environ.get("COOKIE_SECRET", ""),
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
    hosts = [host.lower() for host in app_settings["allowed_hosts"]]
    malformed = [host for host in hosts if not HOST_PATTERN.fullmatch(host)]
    if malformed:
        raise ValueError(f"not a host name (name, *.name or [IPv6], no port): {malformed!r}")
    address = app_settings["address"]
    if is_loopback(address):
        hosts.append(f"[{address}]" if ":" in address else address)
    # Local names are always safe to answer. No names at all means any Host goes, as on a
    # server that others reach by names it cannot know.
    if hosts:
        hosts += LOCAL_HOSTS
    app_settings["host_patterns"] = tuple(hosts)
    if 0 < len(app_settings["cookie_secret"]) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"the cookie secret must be at least {MIN_SECRET_LENGTH} characters; make one "
            "with: python -c 'import secrets; print(secrets.token_hex(32))'"
        )
    return Application(
        [
            (r"/", IndexHandler),
            (r"/websocket", MyWebSocketHandler),
            (r"/stats", StatsHandler),
            (r"/clock", ClockHandler),
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


def fit_max_clients(max_clients: int) -> int:
    """Raise the soft limit on open files to the hard one; return how many clients fit under it."""
    if resource is None:
        return max_clients
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    except (ValueError, OSError):
        pass  # macOS refuses an unlimited hard limit: keep the soft one
    if soft == resource.RLIM_INFINITY or max_clients + RESERVED_DESCRIPTORS <= soft:
        return max_clients
    fitting = max(1, soft - RESERVED_DESCRIPTORS)
    log.warning(
        "--max_clients=%d does not fit in this process's limit of %d open files; "
        "serving at most %d clients (raise the limit with ulimit -n)",
        max_clients,
        soft,
        fitting,
    )
    return fitting


class Acceptor:
    """Accept connections on a listening socket for an HTTPServer, and survive running out of
    file descriptors.

    This does what ``HTTPServer.add_sockets`` does, except for one case. When accept() fails
    with EMFILE or ENFILE, Tornado's own loop (``tornado.netutil.add_accept_handler``) lets the
    error escape: the connection stays queued, the socket stays readable, and the event loop
    calls it again at once, spinning a core and logging a traceback each time. Here the queued
    connections are closed at once, using a descriptor kept spare for that, so their clients
    hear of it instead of hanging; then the socket is left alone for ACCEPT_PAUSE seconds and
    tried again. One warning per episode; ``/stats`` counts them as ``accept_paused``.
    """

    def __init__(self, server: HTTPServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.io_loop = tornado.ioloop.IOLoop.current()
        self.spare: int | None = os.open(os.devnull, os.O_RDONLY)
        self.resuming: object = None  # the timeout that ends a pause
        self.out_of_descriptors = False
        self.io_loop.add_handler(sock, self.accept, tornado.ioloop.IOLoop.READ)

    def accept(self, sock: socket.socket, events: int) -> None:
        for _ in range(ACCEPTS_PER_TURN):
            try:
                connection, address = sock.accept()
            except BlockingIOError:
                return  # nothing more is waiting
            except ConnectionAbortedError:
                continue  # the client gave up while queued
            except OSError as error:
                if error.errno not in (errno.EMFILE, errno.ENFILE):
                    raise
                self.pause()
                return
            if self.out_of_descriptors:
                self.out_of_descriptors = False
                log.info("Accepting connections again")
            stream = tornado.iostream.IOStream(
                connection,
                max_buffer_size=self.server.max_buffer_size,
                read_chunk_size=self.server.read_chunk_size,
            )
            self.server.handle_stream(stream, address)

    def pause(self) -> None:
        if not self.out_of_descriptors:
            self.out_of_descriptors = True
            stats.accept_paused += 1
            log.warning(
                "Out of file descriptors: closing new connections at once until some are free"
            )
        self.turn_away()
        self.io_loop.remove_handler(self.sock)
        self.resuming = self.io_loop.call_later(ACCEPT_PAUSE, self.resume)

    def resume(self) -> None:
        self.resuming = None
        self.io_loop.add_handler(self.sock, self.accept, tornado.ioloop.IOLoop.READ)

    def turn_away(self) -> None:
        """Accept and close what is queued, each in the slot the spare descriptor leaves free."""
        if self.spare is not None:
            os.close(self.spare)
        try:
            for _ in range(ACCEPTS_PER_TURN):
                self.sock.accept()[0].close()
                stats.refused["no_descriptors"] += 1
        except OSError:
            pass  # the queue is empty, or (ENFILE) another process took the free slot
        try:
            self.spare = os.open(os.devnull, os.O_RDONLY)
        except OSError:
            self.spare = None  # try again next time

    def stop(self) -> None:
        """Stop accepting (the server closes the socket)."""
        if self.resuming is not None:
            self.io_loop.remove_timeout(self.resuming)
        else:
            self.io_loop.remove_handler(self.sock)
        if self.spare is not None:
            os.close(self.spare)
            self.spare = None


def add_sockets(server: HTTPServer, sockets: list[socket.socket]) -> None:
    """``server.add_sockets(sockets)``, with an Acceptor in place of Tornado's accept loop."""
    for sock in sockets:
        # Kept where add_sockets keeps them, so that server.stop() stops the Acceptor and closes
        # the socket as it would its own.
        server._sockets[sock.fileno()] = sock
        server._handlers[sock.fileno()] = Acceptor(server, sock).stop


def log_listening(app: tornado.web.Application, sockets: list[socket.socket]) -> None:
    """Say where the server listens (tests wait for this line), and warn if any Host goes."""
    host, port = sockets[0].getsockname()[:2]
    if not app.settings["host_patterns"]:
        log.warning(
            "Listening on %r without --allowed_hosts: any Host is answered, so a page on "
            "another site can reach this server by pointing its own name here (DNS rebinding); "
            "name this server's hosts in --allowed_hosts",
            options.address,
        )
    log.info("Listening on http://%s:%d/", host, port)


async def serve(app: tornado.web.Application, sockets: list[socket.socket] | None = None) -> None:
    """Serve until a signal; ``sockets`` are given when a parent process bound them."""
    # A signal only sets an event; the shutdown itself runs here, on the loop. asyncio runs
    # the handler on the loop too, rather than wherever the signal interrupted the program.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if stop_requested:  # a signal reached this worker before the line above
        stop.set()

    if sockets is None:
        sockets = tornado.netutil.bind_sockets(options.port, options.address)
        log_listening(app, sockets)
    # A handshake left half-sent must not hold its socket for Tornado's default hour.
    server = HTTPServer(app, idle_connection_timeout=30, xheaders=options.xheaders)
    add_sockets(server, sockets)
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
    log_listening(app, sockets)
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
    limit = limit_warnings(options.log_window)
    try:
        app = make_app(max_clients=fit_max_clients(options.max_clients))
    except ValueError as error:
        sys.exit(f"app.py: {error}")
    if options.redis:
        check_redis()
    if options.processes == 1:
        asyncio.run(serve(app))
    else:
        check_processes()
        serve_processes(app, options.processes)  # returns in each worker, once it has stopped
    limit.flush()


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
