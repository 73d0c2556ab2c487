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

Left out on purpose: TLS (put a proxy in front) and authentication of the page. Every optional
part is a module of the ``timepush`` package beside this file, which this file uses and which
never imports it: the Host and origin checks (``hosts``), signed Ids (``signed_ids``),
``POST /push`` and the cluster (``push``, ``cluster``), several processes (``processes``), the
accept loop that survives running out of descriptors (``acceptor``), the bounded log
(``loglimit``), ``/clock`` (``clock``), ``/stats`` (``counters``), ``/metrics`` (``metrics``),
``/healthz`` and ``/readyz`` (``health``), the paced restart on SIGTERM (``drain``), the tick's
fast path (``fastpath``) and the command line (``command_line``). Without ``--processes`` and
``--redis`` this is one process with the ``clients`` dict.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable

import tornado.httputil
import tornado.ioloop
import tornado.netutil
import tornado.web
import tornado.websocket
from tornado.httpserver import HTTPServer
from tornado.options import define, options

from timepush import (
    acceptor,
    clock,
    command_line,
    counters,
    drain,
    fastpath,
    health,
    hosts,
    loglimit,
    metrics,
    processes,
    push,
    signed_ids,
)

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

log = logging.getLogger("app")

MAX_ID_LENGTH = 64

# Close codes this server sends (RFC 6455 section 7.4; 4000-4999 are for applications).
CLOSE_GOING_AWAY = 1001  # the server is shutting down
CLOSE_UNSUPPORTED_DATA = 1003  # a binary message: this server only takes text
CLOSE_POLICY_VIOLATION = 1008  # too many messages, or ticks left unread
CLOSE_TOO_BIG = 1009  # sent by Tornado itself past websocket_max_message_size
CLOSE_REPLACED = 4000  # another connection took over this Id
REPLACED = (CLOSE_REPLACED, "Replaced by a newer connection with the same Id")

# Client Id -> {"id": Id, "object": MyWebSocketHandler}. Only the IOLoop's thread touches it.
clients: dict[str, dict[str, Any]] = {}
# The same clients as the tick's loop goes through them fastest (timepush/fastpath.py). Only
# add_client() and remove_client() change either, so that they always hold the same clients.
targets = fastpath.Targets()
# What /stats reports; the loop's thread's alone too.
stats = counters.Stats()
stats.sources.append(lambda: {"clients": len(clients)})
# This process as a place to push to; with --redis, one node of a cluster.
node = push.Node(clients, targets, stats)


def add_client(handler: MyWebSocketHandler) -> None:
    """Put a newly opened client in ``clients``, in the place of any with its Id."""
    clients[handler.client_id] = {"id": handler.client_id, "object": handler}
    targets.add(handler.client_id, handler)


def remove_client(handler: MyWebSocketHandler) -> bool:
    """Take a closed client out of ``clients``, unless a newer one has taken over its Id;
    say whether it was taken out."""
    entry = clients.get(handler.client_id)
    if entry is None or entry["object"] is not handler:
        return False
    del clients[handler.client_id]
    targets.remove(handler.client_id)
    return True


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


class IndexHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.render("index.html", interval=self.settings["interval"])

    def prepare(self) -> None:
        # With --cookie_secret the server, not the page, picks the Id (timepush/signed_ids.py).
        self.client_id = signed_ids.hand_out_id(self) if self.settings["cookie_secret"] else ""


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
        if (restarting := drain.refusal(stats)) is not None:
            raise tornado.web.HTTPError(503, reason=restarting)  # a proxy tries another node
        if len(clients) >= self.settings["max_clients"] and client_id not in clients:
            stats.refused["full"] += 1
            raise tornado.web.HTTPError(503, reason="Server full, try again later")
        self.client_id = client_id
        if self.settings["cookie_secret"]:
            signed_ids.check_signature(self, client_id)  # 403 unless the cookie signs this Id

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        reason = getattr(error, "reason", None) or tornado.httputil.responses.get(status_code)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code} {reason}\n")

    def check_origin(self, origin: str) -> bool:
        # Tornado's own check admits a page served by this server (its origin matches Host);
        # --allowed_origins admits others, and any other origin gets a 403 with a reason.
        return super().check_origin(origin) or hosts.admit_origin(self, origin)

    def open(self) -> None:
        fastpath.forget_handshake(self)  # 3.7 of the 14 KB a connection would keep
        self.set_nodelay(True)
        self.tokens = float(self.settings["max_messages_per_second"])
        self.tokens_at = time.monotonic()
        old = clients.get(self.client_id)
        if old is not None:
            stats.closed["replaced"] += 1
            old["object"].close(*REPLACED)
        add_client(self)
        stats.count_open(takeover=old is not None)
        log.info("Client %r connected (%d connected)", self.client_id, len(clients))
        node.claim(self.client_id)  # with --redis, an older one on another node is closed

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
        stats.count_close(self.close_code)
        log.info(
            "Client %r left (code %r, reason %r; %d connected)",
            self.client_id,
            self.close_code,
            self.close_reason,
            len(clients),
        )
        if removed:
            node.release(self.client_id)

    def apply_slow_client_rule(self, now: float) -> bool:
        """The slow-client rule, for a client whose last frame is still queued: skip this one
        (only the newest time matters), and close a client that stays behind too long.
        Return whether a frame was skipped for it."""
        stream = self.ws_connection.stream  # type: ignore[union-attr]
        if stream.closed():
            return False  # the connection has not noticed yet; on_close() follows
        if self.undrained_since is None:
            self.undrained_since = now
            # Told when the stream has sent everything queued so far, so that the tick's loop
            # need not look at this handler to end the count.
            stream.write(b"").add_done_callback(self.drained)
        elif now - self.undrained_since > self.settings["slow_client_timeout"]:
            stats.closed["slow"] += 1
            log.warning("Client %r has not read a tick for a while", self.client_id)
            self.close(CLOSE_POLICY_VIOLATION, "Not reading ticks")
        return True

    def drained(self, future: asyncio.Future[None]) -> None:
        self.undrained_since = None


def send_to_all(text: str) -> None:
    """Send one tick to every client, and count it. Runs on the IOLoop's thread, where the
    SendThread's add_callback puts it."""
    started = time.perf_counter()
    # Encoded once, the same bytes for everyone; a client still busy with the last tick is
    # handed back, for the slow-client rule.
    sent, busy = targets.write_to_each(fastpath.encode_text_frame(text))
    now = time.monotonic()
    stats.ticks += 1
    stats.ticks_sent += sent
    stats.ticks_skipped_slow += sum(handler.apply_slow_client_rule(now) for handler in busy)
    stats.fanout_ms.append((time.perf_counter() - started) * 1000)


def count_late_ticks(missed: int) -> None:
    stats.ticks_skipped_late += missed


class SendThread(threading.Thread):
    """Wake at every multiple of ``interval`` on the wall clock and hand the time to the loop."""

    def __init__(self, io_loop: tornado.ioloop.IOLoop, interval: float = 1.0) -> None:
        super().__init__(name="SendThread", daemon=True)
        self.io_loop = io_loop
        self.interval = interval
        self.stopping = threading.Event()
        self.clock = time.time  # the wall clock (a test sets it back)

    def run(self) -> None:
        # Aim at whole multiples of the interval (the turn of each second by default), and
        # compute each target from a tick number rather than by adding up sleeps, so the
        # schedule cannot drift.
        tick = math.floor(self.clock() / self.interval) + 1
        while not self.stopping.is_set():
            delay = tick * self.interval - self.clock()
            if delay > self.interval:
                # The wall clock was set back: aim at the next boundary from now on.
                tick = math.floor(self.clock() / self.interval) + 1
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


def make_app(**settings: Any) -> tornado.web.Application:
    """Build the application; keyword arguments override settings taken from the options."""
    here = os.path.dirname(os.path.abspath(__file__))
    defaults: dict[str, Any] = dict(
        template_path=os.path.join(here, "templates"),
        static_path=os.path.join(here, "static"),
        debug=options.debug,
        interval=options.interval,
        address=options.address,
        max_clients=options.max_clients,
        max_messages_per_second=options.max_messages_per_second,
        slow_client_timeout=options.slow_client_timeout,
        websocket_max_message_size=options.max_message_size,
        websocket_ping_interval=options.ping_interval,
        websocket_ping_timeout=options.ping_timeout,
        log_function=loglimit.log_request,
        push_token=os.environ.get("PUSH_TOKEN", ""),
        stats=stats,
    )
    settings = {**defaults, **settings}
    hosts.configure(settings)  # each raises ValueError for a setting that cannot work
    signed_ids.configure(settings)
    return hosts.HostCheckingApplication(
        [
            (r"/", IndexHandler),
            (r"/websocket", MyWebSocketHandler),
            (r"/stats", counters.StatsHandler),
            (r"/metrics", metrics.MetricsHandler),
            (r"/healthz", health.HealthHandler),
            (r"/readyz", health.ReadyHandler),
            (r"/clock", clock.ClockHandler),
            (r"/push", push.PushHandler, dict(node=node, id_problem=id_problem)),
        ],
        **settings,
    )


async def close_all(code: int, reason: str, timeout: float) -> None:
    """Close every client and wait, up to ``timeout`` seconds, for them to answer."""
    for entry in list(clients.values()):
        entry["object"].close(code, reason)
    stats.closed["shutdown"] += len(clients)
    deadline = time.monotonic() + timeout
    while clients and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


async def serve(
    app: tornado.web.Application,
    sockets: list[socket.socket],
    stop_requested: Callable[[], bool] = lambda: False,
) -> None:
    """Serve on ``sockets`` until a signal (or until ``stop_requested()`` says one came)."""
    # A signal only sets an event; the shutdown itself runs here, on the loop. asyncio runs
    # the handler on the loop too, rather than wherever the signal interrupted the program.
    stop = asyncio.Event()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    if stop_requested():  # a signal reached this worker before the lines above
        stop.set()

    targets.check()  # that the fast path still reads this Tornado right
    # A handshake left half-sent must not hold its socket for Tornado's default hour.
    server = HTTPServer(app, idle_connection_timeout=30, xheaders=options.xheaders)
    acceptor.add_sockets(server, sockets, stats)
    metrics.start(app.settings)  # with --processes, this worker's figures for the others
    if options.redis:
        node.join(options.redis, counters.node_name(), REPLACED, options.redis_interval)
    hosts.warn_if_any_host(app.settings)
    log.info("Listening on http://%s:%d/", *sockets[0].getsockname()[:2])  # tests wait for it

    thread = SendThread(tornado.ioloop.IOLoop.current(), options.interval)
    thread.start()
    await stop.wait()

    log.info("Shutting down")
    if received[:1] == [signal.SIGTERM] and options.drain_seconds > 0:
        # A service manager's stop, not Ctrl-C: the clients leave a few at a time, still ticking.
        await drain.drain(clients, stats, options.drain_seconds)
    thread.stop()
    thread.join()
    server.stop()
    await close_all(CLOSE_GOING_AWAY, "Server shutting down", timeout=1.0)
    await node.leave()


def main(argv: list[str] | None = None) -> None:
    """Run the server; ``argv`` are the command-line words after the program name."""
    command_line.parse(sys.argv[1:] if argv is None else argv)
    limit = loglimit.limit_warnings(options.log_window)
    try:
        app = make_app(max_clients=acceptor.fit_max_clients(options.max_clients))
    except ValueError as error:
        sys.exit(f"app.py: {error}")
    push.check_options()
    if options.processes == 1:
        sockets = tornado.netutil.bind_sockets(options.port, options.address)
        asyncio.run(serve(app, sockets))
    else:
        processes.check_options()
        metrics.share(app.settings)
        # Returns in each worker, once it has stopped; nothing before it makes a loop or thread.
        processes.serve_processes(
            options.processes,
            options.address,
            options.port,
            lambda sockets: asyncio.run(serve(app, sockets, processes.stop_requested)),
        )
    limit.flush()


if __name__ == "__main__":
    main()
