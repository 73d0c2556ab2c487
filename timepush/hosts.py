"""Which pages may open a WebSocket (the Origin check), and which host names the server answers
to at all (the Host check, against DNS rebinding).

``app.py`` builds its application from ``HostCheckingApplication`` and asks ``admit_origin``
whatever Tornado's own same-origin check refuses. ``configure`` reads this module's options into
the application's settings. This module imports nothing of the project: what it counts goes to
the ``stats`` object in the settings.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from typing import Any
from urllib.parse import urlsplit

import tornado.httputil
import tornado.web
from tornado.options import define, options

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

log = logging.getLogger(__name__)

ORIGIN_REFUSED = "Origin does not match Host: a proxy must pass Host, or use --allowed_origins"
# The names a browser on this machine reaches a loopback server by. A page on another site that
# has its own name pointed at 127.0.0.1 (DNS rebinding) still sends its own name as the Host.
LOCAL_HOSTS = ("localhost", "*.localhost", "127.0.0.1", "[::1]")
# A Host header: a name or a bracketed IPv6 address, then an optional port.
HOST_HEADER = re.compile(r"([a-z0-9_-]+(?:\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\])(?::\d{1,5})?")
# Answered whatever the Host: a kubelet's or a balancer's probe names the node by its address,
# which changes with every pod or machine and so cannot be listed in --allowed_hosts, and these
# answer only a status and a word or two, nothing a rebound page could use
# (timepush/health.py). /metrics is not among them: add the address Prometheus scrapes.
PROBE_PATHS = ("/healthz", "/readyz")
# An entry of --allowed_hosts: a name, *.name for every name below it, or * for any.
HOST_PATTERN = re.compile(r"\*|(?:\*\.)?[a-z0-9_-]+(?:\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\]")


def configure(settings: dict[str, Any]) -> None:
    """Fill in the settings of both checks from the options, unless given; refuse bad ones."""
    settings.setdefault("allowed_origins", options.allowed_origins)
    settings.setdefault("allowed_hosts", options.allowed_hosts)
    allowed = settings["allowed_origins"]
    malformed = [origin for origin in allowed if origin_key(origin) is None]
    if malformed:
        raise ValueError(f"not an origin (scheme://host[:port]): {malformed!r}")
    settings["allowed_origin_keys"] = frozenset(origin_key(origin) for origin in allowed)
    hosts = [host.lower() for host in settings["allowed_hosts"]]
    malformed = [host for host in hosts if not HOST_PATTERN.fullmatch(host)]
    if malformed:
        raise ValueError(f"not a host name (name, *.name or [IPv6], no port): {malformed!r}")
    address = settings["address"]
    if is_loopback(address):
        hosts.append(f"[{address}]" if ":" in address else address)
    # Local names are always safe to answer. No names at all means any Host goes, as on a
    # server that others reach by names it cannot know.
    if hosts:
        hosts += LOCAL_HOSTS
    settings["host_patterns"] = tuple(hosts)


def warn_if_any_host(settings: dict[str, Any]) -> None:
    """At start-up, warn when no Host is refused (a server listening beyond loopback)."""
    if not settings["host_patterns"]:
        log.warning(
            "Listening on %r without --allowed_hosts: any Host is answered, so a page on "
            "another site can reach this server by pointing its own name here (DNS rebinding); "
            "name this server's hosts in --allowed_hosts",
            settings["address"],
        )


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


def admit_origin(handler: tornado.web.RequestHandler, origin: str) -> bool:
    """Return True for an origin in --allowed_origins; refuse any other with a 403 and a reason.

    Asked only for what Tornado's own check refused: a page that this server did not serve.
    """
    if origin_key(origin) in handler.settings["allowed_origin_keys"]:
        return True
    handler.settings["stats"].refused["origin"] += 1
    # Behind a proxy that rewrites Host (nginx's own example does), the page's origin never
    # matches it: say so in the first line the operator reads.
    log.warning(
        "Refused a connection from origin %r: it does not match Host %r. If the page "
        "comes through a proxy, pass the Host header on (nginx: proxy_set_header Host "
        "$http_host;) or allow that origin with --allowed_origins=...",
        origin[:200],
        handler.request.headers.get("Host", "")[:200],
    )
    # Raised rather than returning False, so that the 403 carries a reason of its own.
    raise tornado.web.HTTPError(403, reason=ORIGIN_REFUSED)


class RefusedHandler(tornado.web.RequestHandler):
    """Answer any request with one status and reason, as plain text."""

    def initialize(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason

    def prepare(self) -> None:
        self.set_status(self.status, self.reason)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{self.status} {self.reason}\n")


class HostCheckingApplication(tornado.web.Application):
    """Tornado's Application, refusing a request for a host name it does not answer to."""

    def find_handler(
        self, request: tornado.httputil.HTTPServerRequest, **kwargs: Any
    ) -> tornado.httputil.HTTPMessageDelegate:
        # Every request passes here before any handler runs, static files included. The Origin
        # check cannot stop a rebound name: there the page's origin and Host agree.
        patterns = self.settings["host_patterns"]
        probe = request.path in PROBE_PATHS  # answered whatever the Host: see PROBE_PATHS
        if patterns and not probe and not host_allowed(request.host, patterns):
            self.settings["stats"].refused["host"] += 1
            log.warning("Refused a request for host %r", request.host[:200])
            # Tornado has refused a Host with anything but URI characters, so %r is safe here.
            reason = f"Host not allowed: {request.host[:100]!r}"
            refusal = {"status": 403, "reason": reason}
            return self.get_handler_delegate(request, RefusedHandler, refusal)
        return super().find_handler(request, **kwargs)
