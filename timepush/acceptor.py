"""An accept loop that survives running out of file descriptors, and the limit it lives under.

``HTTPServer.add_sockets`` runs Tornado's own accept loop (``tornado.netutil.add_accept_handler``).
When ``accept()`` fails with EMFILE or ENFILE, that loop lets the error escape: the connection
stays queued, the socket stays readable, and the event loop calls it again at once, spinning a
core and logging a traceback each time. ``add_sockets`` here puts an ``Acceptor`` in its place.

Below Tornado's public API: it keeps each socket in ``TCPServer._sockets`` and its stop function
in ``TCPServer._handlers``, where ``add_sockets`` keeps them, so that ``server.stop()`` stops the
Acceptor and closes the socket as it would its own (``tests/test_acceptor.py`` checks
this). This module imports nothing of the project.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from typing import Any

import tornado.ioloop
import tornado.iostream
from tornado.httpserver import HTTPServer

try:
    import resource
except ImportError:  # Windows has no descriptor limit to raise
    resource = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

# Descriptors kept back from --max_clients: about ten the process holds itself (standard streams,
# the event loop, the listening sockets, a spare), and room for handshakes under way, /stats
# requests and refused clients that have not hung up yet.
RESERVED_DESCRIPTORS = 64
ACCEPT_PAUSE = 0.1  # seconds to stop accepting after accept() ran out of descriptors
ACCEPTS_PER_TURN = 128  # as Tornado's own accept loop: let other work run between batches


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
    """Accept connections on a listening socket for an HTTPServer, out of descriptors or not.

    When accept() runs out, the queued connections are closed at once, using a descriptor kept
    spare for that, so their clients hear of it instead of hanging; then the socket is left
    alone for ACCEPT_PAUSE seconds and tried again. One warning per episode; ``stats`` counts
    them in ``accept_paused`` and the connections closed in ``refused["no_descriptors"]``.
    """

    def __init__(self, server: HTTPServer, sock: socket.socket, stats: Any) -> None:
        self.server = server
        self.sock = sock
        self.stats = stats
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
            self.stats.accept_paused += 1
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
                self.stats.refused["no_descriptors"] += 1
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


def add_sockets(server: HTTPServer, sockets: list[socket.socket], stats: Any) -> None:
    """``server.add_sockets(sockets)``, with an Acceptor in place of Tornado's accept loop."""
    for sock in sockets:
        server._sockets[sock.fileno()] = sock
        server._handlers[sock.fileno()] = Acceptor(server, sock, stats).stop
