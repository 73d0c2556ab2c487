"""A bounded log: the first few warnings of each kind in a window of time, then one line that
counts the rest; and the access log's levels.

A client can be refused thousands of times a second, and every refusal logs a warning or two.
``limit_warnings`` puts one ``LogLimit`` on every handler of the root logger, where the records
of every logger arrive: the project's modules, Tornado's and any other library's. (A filter on
a logger would see only the records logged through that very logger, not its children's.)
This module imports nothing of the project.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

import tornado.log
import tornado.web
from tornado.options import define

define(
    "log_window",
    default=10.0,
    help="seconds in which the first 5 warnings of each kind are logged; one line counts the rest",
    type=float,
)

LOG_BURST = 5  # warnings of one kind logged in full per --log_window


@dataclasses.dataclass
class LogWindow:
    """The warnings of one kind since its window started."""

    started: float
    first: logging.LogRecord
    count: int = 0


class LogLimit(logging.Filter):
    """Let the first few warnings of each kind through in a window of time, then count the rest.

    This filter passes the first LOG_BURST records of each kind (from the same logging call, and
    with the same ``kind`` if the call gives one in ``extra``) in every ``window`` seconds as they
    are, holds the rest back, and at the end of the window logs one line saying how many there
    were. The log then grows by a bounded amount whatever clients do; ``/stats`` keeps the exact
    counts. Records below WARNING pass untouched (``--logging=warning`` quiets those). It runs
    on the loop's thread, like the handlers.
    """

    def __init__(self, window: float) -> None:
        super().__init__()
        self.window = window
        self.windows: dict[tuple[Any, ...], LogWindow] = {}
        # One record reaches every handler this filter is on: decide once for it.
        self.last: tuple[logging.LogRecord | None, bool] = (None, True)

    def filter(self, record: logging.LogRecord) -> bool:
        if record is self.last[0]:
            return self.last[1]
        verdict = self.admit(record)
        self.last = (record, verdict)
        return verdict

    def admit(self, record: logging.LogRecord) -> bool:
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
        held_back = window.count - LOG_BURST
        if held_back > 0:
            seconds = min(time.monotonic() - window.started, self.window)
            logging.getLogger(window.first.name).log(
                window.first.levelno,
                "%s more %s like %r in the last %.3g s",
                f"{held_back:,}",
                "line" if held_back == 1 else "lines",
                window.first.getMessage()[:200],
                seconds,
                extra={"summary": True},
            )

    def flush(self) -> None:
        """End every window now, as the server stops."""
        for kind, window in list(self.windows.items()):
            self.summarise(kind, window)


def limit_warnings(window: float) -> LogLimit:
    """Put one LogLimit on every handler of the root logger (set up by the options already)."""
    limit = LogLimit(window)
    for handler in logging.getLogger().handlers:
        handler.addFilter(limit)
    return limit


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Log a request as Tornado does, except that a 503 when full is a warning, not an error.

    Turning a client away is the server working as designed, like the other refusals (4xx).
    A handler marked ``probe`` (health checks, scrapes) is asked every few seconds forever: its
    lines are DEBUG unless it fails.
    """
    status = handler.get_status()
    if getattr(handler, "probe", False) and (status < 500 or status == 503):
        log_method = tornado.log.access_log.debug
    elif status < 400:
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
