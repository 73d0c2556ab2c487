"""A restart that no client notices: on SIGTERM, close the clients a few at a time.

A node that closed every client in the same instant would send them all at the other nodes at
once. ``drain()`` instead takes the node out first (``/readyz`` answers 503, and so does a new
WebSocket handshake, so that a proxy tries another node) and then closes its clients with 1012
("Service restart") in small batches spread evenly over ``--drain_seconds``, while the ticks
go on for those still waiting their turn. The page reconnects at a random moment in the next
few seconds, so the other nodes see a steady trickle rather than a burst.

Ctrl-C in a terminal wants the program gone, not a considerate exit: ``app.py`` calls this on
SIGTERM only, and ``--drain_seconds=0`` makes SIGTERM as quick as Ctrl-C. This module is handed
the ``clients`` dict and the ``Stats`` and imports nothing of the project.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from tornado.options import define

define(
    "drain_seconds",
    default=10.0,
    help="on SIGTERM, close the clients with 1012 in batches spread over this many seconds "
    "(0: all at once with 1001, as Ctrl-C does)",
    type=float,
)

log = logging.getLogger(__name__)

CLOSE_SERVICE_RESTART = 1012  # the server restarts: reconnect in a moment, to it or another
RESTARTING = (CLOSE_SERVICE_RESTART, "Service restart")
REFUSED = "Server restarting, try another"  # the reason of a handshake's 503 meanwhile

# How far apart the batches are, at most: a few per second is smooth enough for a proxy.
STEP = 0.1


async def drain(clients: dict[str, Any], stats: Any, seconds: float) -> None:
    """Refuse new clients, then close the present ones with 1012 over ``seconds``, and wait
    (a second at most) for the last ones' goodbyes."""
    stats.drain(f"restarting, closing {len(clients)} clients over {seconds:g} s")
    # The clients of now: nobody new is let in, and a client that leaves meanwhile is skipped.
    handlers = [entry["object"] for entry in list(clients.values())]
    log.info("Draining: closing %d clients over %g s", len(handlers), seconds)
    batches = max(1, min(len(handlers), math.ceil(seconds / STEP)))
    loop = asyncio.get_running_loop()
    started = loop.time()
    for batch in range(batches):
        # Batch n starts at n/batches of the window, so the last one leaves a step before its end.
        await asyncio.sleep(max(0.0, started + batch * seconds / batches - loop.time()))
        first, end = batch * len(handlers) // batches, (batch + 1) * len(handlers) // batches
        for handler in handlers[first:end]:
            if handler.ws_connection is not None and not handler.ws_connection.is_closing():
                handler.close(*RESTARTING)
                stats.closed["shutdown"] += 1
    deadline = loop.time() + 1.0
    while clients and loop.time() < deadline:
        await asyncio.sleep(0.01)


def refusal(stats: Any) -> str | None:
    """The reason to refuse a new WebSocket while the node drains, or None to let it in."""
    if stats.draining:
        stats.refused["draining"] += 1
        return REFUSED
    return None
