"""Several worker processes on one port (``--processes``), each with its own listening socket.

The parent forks the workers and waits on them; it makes no event loop, thread or Redis
connection, so that no child gets a copy of one that does not work. Each worker binds the port
itself with ``SO_REUSEPORT``, and the kernel spreads new connections evenly over the workers'
sockets. (With one socket shared by every worker, whichever worker wakes first takes the
connection: a burst lands on one of them.) Not on Windows, which has neither ``fork`` nor
``SO_REUSEPORT``. This module imports nothing of the project.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from typing import Any, Callable

import tornado.netutil
import tornado.process
from tornado.options import define, options

define(
    "processes",
    default=1,
    help="worker processes sharing the port; 0 means one per CPU; more than 1 needs --redis",
    type=int,
)

# Set when a worker is told to stop before its loop has installed its own handler.
stopping = False


def stop_requested() -> bool:
    """Whether this worker was told to stop before its loop could hear of it."""
    return stopping


def check_options() -> None:
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


def free_port(address: str, port: int) -> int:
    """Check that ``port`` can be bound at ``address`` (0: pick one) and return it."""
    sockets = tornado.netutil.bind_sockets(port, address, reuse_port=True)
    port = sockets[0].getsockname()[1]
    for sock in sockets:
        sock.close()  # each worker binds its own; nobody has connected in this instant
    return port


def serve_processes(
    count: int, address: str, port: int, serve: Callable[[list[socket.socket]], None]
) -> None:
    """Fork ``count`` workers; in each, bind the port and call ``serve(sockets)``.

    Returns in each worker once it has stopped. The parent exits 0 when every worker has
    exited 0, and restarts (and logs) a worker that dies from a signal or exits with an error.
    """
    port = free_port(address, port)
    # fork_processes only waits on its children: pass Ctrl-C and SIGTERM on to them through
    # the process group. A terminal's Ctrl-C reaches the whole group anyway, so become the
    # group's leader only when started inside someone else's group (a supervisor's).
    parent = os.getpid()
    if os.getpgrp() != parent:
        os.setpgrp()

    def forward(signum: int, frame: Any) -> None:
        global stopping
        if os.getpid() != parent:
            stopping = True  # a worker, between the fork and its loop's own handler
            return
        for name in (signal.SIGINT, signal.SIGTERM):
            signal.signal(name, signal.SIG_IGN)  # killpg sends it back to us too
        os.killpg(os.getpgrp(), signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    tornado.process.fork_processes(count)
    serve(tornado.netutil.bind_sockets(port, address, reuse_port=True))
