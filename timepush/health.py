"""``GET /healthz`` and ``GET /readyz``: whether the process serves, and whether it should get
new clients.

``/healthz`` answers 200 as long as the loop answers at all: a supervisor that gets no answer
restarts the process. ``/readyz`` answers 200 while the node takes new clients and 503 once it
drains (``Stats.drain()``, for a shutdown): a balancer then sends new connections elsewhere while
the node's own clients are still served. A cluster node whose link to Redis is down stays ready:
it still serves its clients and takes new ones, and every node shares the same Redis, so taking
them all out of the balancer because Redis blinked would turn a partial failure into a whole
one; the body says the link is down.

Both are cheap (no I/O, nothing computed per client) and answer any Host (``timepush/hosts.py``
says why); their access-log lines are DEBUG (``timepush/loglimit.py``). This module imports
nothing of the project.
"""

from __future__ import annotations

import tornado.web


class Probe(tornado.web.RequestHandler):
    probe = True  # asked every few seconds: its access-log line is DEBUG

    def answer(self, status: int, reason: str, text: str) -> None:
        self.set_status(status, reason)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(text + "\n")


class HealthHandler(Probe):
    def get(self) -> None:
        self.answer(200, "OK", "ok")


class ReadyHandler(Probe):
    def get(self) -> None:
        stats = self.settings["stats"]
        if stats.draining:
            self.answer(503, "Draining", f"draining: {stats.draining}")
        elif stats.sourced().get("redis") == "down":
            self.answer(200, "OK", "ready; the link to Redis is down: serving this node's clients")
        else:
            self.answer(200, "OK", "ready")
