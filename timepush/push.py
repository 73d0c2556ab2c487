"""Pushes from outside (``POST /push``), and this process as a node of a cluster (``--redis``).

``Node`` is what ``app.py`` tells about its clients: ``claim`` when one opens, ``release`` when
one closes, and ``send`` to push a text to one client or to all. Alone, a node only has its own
clients. Joined to a cluster (``join``, on the loop after any fork), it hands claims, releases
and pushes for other nodes' clients to ``cluster.Cluster``, and closes a local client whose Id a
connection on another node took over. This module is handed the core's state (``clients``, the
tick's ``targets``, ``stats``) and never imports ``app.py``.
"""

from __future__ import annotations

import hmac
import json
import logging
import sys
import time
from typing import Any

import tornado.httputil
import tornado.web
from tornado.options import define, options

from timepush import fastpath

define("redis", default="", help="Redis URL shared by every node, e.g. redis://127.0.0.1:6379/0")
define(
    "redis_interval",
    default=1.0,
    help="seconds between a node's rounds with Redis (heartbeat, subscription check)",
    type=float,
)

log = logging.getLogger(__name__)

MAX_PUSH_BYTES = 64 * 1024


def check_options() -> None:
    """Refuse --redis without the redis package, or with a URL that is not one (before a fork)."""
    if not options.redis:
        return
    try:
        from timepush import cluster  # only a module: it connects to nothing until started
    except ImportError as error:
        sys.exit(f"app.py: --redis needs the redis package ({error}): pip install -e '.[redis]'")
    problem = cluster.url_problem(options.redis)
    if problem:
        sys.exit(f"app.py: --redis: {problem}")


class Node:
    """This process's clients as a place to push to, alone or as one node of a cluster."""

    def __init__(self, clients: dict[str, Any], targets: fastpath.Targets, stats: Any) -> None:
        self.clients = clients
        self.targets = targets
        self.stats = stats
        self.cluster: Any = None  # a cluster.Cluster once joined

    def join(self, url: str, name: str, takeover: tuple[int, str], interval: float) -> None:
        """Join the cluster of nodes that share the Redis at ``url``."""
        from timepush import cluster  # optional: needs the redis extra

        self.cluster = cluster.Cluster(
            url,
            node=name,
            deliver=self.send_to_one,
            deliver_all=self.send_to_all,
            close=self.close,
            takeover=takeover,
            local_stats=lambda: {
                "clients": len(self.clients),
                "ticks_sent": self.stats.ticks_sent,
                "refused": dict(self.stats.refused),
            },
            interval=interval,
        )
        self.stats.sources.append(self.cluster.stats)
        self.cluster.start()

    async def leave(self) -> None:
        if self.cluster is not None:
            await self.cluster.stop()

    def claim(self, client_id: str) -> None:
        """A client opened with this Id here: in a cluster, close any older one elsewhere."""
        if self.cluster is not None:
            self.cluster.claim(client_id)

    def release(self, client_id: str) -> None:
        """The client that held this Id here has gone."""
        if self.cluster is not None:
            self.cluster.release(client_id)

    async def send(self, client_id: str | None, text: str) -> tuple[int | None, list[str]]:
        """Push ``text`` to one client (or all, for None) wherever it is.

        Returns how many got it, and the nodes of the cluster that did not answer in time (they
        may have delivered it as well). How many is None when no client with this Id is
        connected, or when the node that holds it did not answer. A client that has not read
        its last message is skipped, as for a tick, and counted in ``pushes_skipped_slow``.
        """
        if self.cluster is not None:
            return await self.cluster.push(client_id, text)
        if client_id is None:
            return self.send_to_all(text), []
        if client_id not in self.clients:
            return None, []
        return self.send_to_one(client_id, text), []

    def send_to_all(self, text: str) -> int:
        """Write a pushed text to every local client, count it; return how many got it."""
        return self.count(*self.targets.write_to_each(fastpath.encode_text_frame(text)))

    def send_to_one(self, client_id: str, text: str) -> int:
        """Write a pushed text to the local client with this Id, count it; return 1 or 0."""
        return self.count(*self.targets.write_to_one(client_id, fastpath.encode_text_frame(text)))

    def count(self, sent: int, busy: list[Any]) -> int:
        now = time.monotonic()
        self.stats.pushed += sent
        self.stats.pushes_skipped_slow += sum(h.apply_slow_client_rule(now) for h in busy)
        return sent

    def close(self, client_id: str, code: int, reason: str) -> None:
        """Close the local client with this Id: another node took the Id over."""
        entry = self.clients.get(client_id)
        if entry is not None:
            self.stats.closed["replaced"] += 1
            entry["object"].close(code, reason)


@tornado.web.stream_request_body
class PushHandler(tornado.web.RequestHandler):
    """``POST /push`` with ``{"Id": ..., "message": ...}``, or without ``Id`` for everyone.

    Off (404) unless the PUSH_TOKEN environment variable is set; then it takes only requests
    that carry ``Authorization: Bearer <that token>``. The body is read as it arrives, so that
    one over the limit is refused without being kept in memory.
    """

    def initialize(self, node: Node, id_problem: Any) -> None:
        self.node = node
        self.id_problem = id_problem

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
        except RecursionError:
            raise tornado.web.HTTPError(400, reason="Body nested too deeply") from None
        if not isinstance(request, dict) or not isinstance(request.get("message"), str):
            raise tornado.web.HTTPError(400, reason='Missing "message" (a string)')
        try:
            request["message"].encode("utf-8")  # as the frame will be
        except UnicodeEncodeError:
            raise tornado.web.HTTPError(400, reason='"message" has a lone surrogate') from None
        client_id = request.get("Id")
        if "Id" in request and (not isinstance(client_id, str) or self.id_problem(client_id)):
            raise tornado.web.HTTPError(400, reason='"Id" is not a valid Id')
        try:
            reached, unanswered = await self.node.send(client_id, request["message"])
        except ConnectionError:
            raise tornado.web.HTTPError(503, reason="Cluster link down, try again") from None
        if reached is None and unanswered:
            # Connected there, as far as Redis knows: "not found" would be a guess.
            error = tornado.web.HTTPError(
                504, reason="The node that holds this Id did not answer in time"
            )
            error.unanswered = unanswered  # for write_error
            raise error
        if reached is None:
            raise tornado.web.HTTPError(404, reason="No client with this Id is connected")
        self.write({"reached": reached, **({"unanswered": unanswered} if unanswered else {})})

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 401:
            self.set_header("WWW-Authenticate", "Bearer")
        error = kwargs.get("exc_info", (None, None, None))[1]
        reason = getattr(error, "reason", None) or tornado.httputil.responses.get(status_code)
        unanswered = getattr(error, "unanswered", None)
        self.finish({"error": reason, **({"unanswered": unanswered} if unanswered else {})})
