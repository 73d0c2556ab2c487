"""Signed Ids: with ``--cookie_secret`` the server hands out the Ids, and a client can only open
the Id that its browser's signed cookie names.

The Id then lives in a signed cookie rather than in a token that the page adds to the
WebSocket's URL: the browser sends the cookie with the handshake by itself, so no signature ever
stands in a URL, where access logs and proxies would record it; HttpOnly keeps it from the
page's scripts, and SameSite from other sites' pages. The price: a cookie belongs to the whole
browser, so all its tabs share one Id, and the newest tab takes it over.

``app.py``'s ``IndexHandler`` calls ``hand_out_id`` and ``MyWebSocketHandler`` calls
``check_signature``. This module imports nothing of the project.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
from typing import Any

import tornado.web
from tornado.options import define, options

define(
    "cookie_secret",
    default="",
    help="hand out Ids signed with this secret (or set COOKIE_SECRET), so that a client "
    "cannot take over another's Id; at least 32 characters",
)

log = logging.getLogger(__name__)

ID_COOKIE = "clock_id"
ID_MAX_AGE_DAYS = 30
MIN_SECRET_LENGTH = 32


def configure(settings: dict[str, Any]) -> None:
    """Take the secret from the option or the environment, unless given; refuse a short one."""
    settings.setdefault(
        "cookie_secret", options.cookie_secret or os.environ.get("COOKIE_SECRET", "")
    )
    if 0 < len(settings["cookie_secret"]) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"the cookie secret must be at least {MIN_SECRET_LENGTH} characters; make one "
            "with: python -c 'import secrets; print(secrets.token_hex(32))'"
        )


def hand_out_id(handler: tornado.web.RequestHandler) -> str:
    """The Id this browser's signed cookie holds, or a new one; signed afresh either way."""
    signed = handler.get_signed_cookie(ID_COOKIE, max_age_days=ID_MAX_AGE_DAYS)
    client_id = signed.decode() if signed else secrets.token_urlsafe(12)
    handler.set_signed_cookie(
        ID_COOKIE,
        client_id,
        expires_days=ID_MAX_AGE_DAYS,
        httponly=True,
        samesite="Strict",
        # Over https (behind a proxy, as --xheaders tells it), never sent in the clear.
        secure=handler.request.protocol == "https",
    )
    return client_id


def check_signature(handler: tornado.web.RequestHandler, client_id: str) -> None:
    """Refuse a handshake (403, with the reason) whose signed cookie is not for ``client_id``."""
    problem = signature_problem(handler, client_id)
    if problem is not None:
        handler.settings["stats"].refused["signature"] += 1
        log.warning("Refused Id %r: %s", client_id[:100], problem)
        raise tornado.web.HTTPError(403, reason=problem)


def signature_problem(handler: tornado.web.RequestHandler, client_id: str) -> str | None:
    """Say what is wrong with the handshake's signed cookie for ``client_id``, or None."""
    cookie = handler.get_cookie(ID_COOKIE)
    if not cookie:
        return "Missing signature for the Id: load the page first"
    secret = handler.settings["cookie_secret"]
    signed = tornado.web.decode_signed_value(secret, ID_COOKIE, cookie, ID_MAX_AGE_DAYS)
    if signed is None:
        # Tornado says only "not valid"; a second look without an age limit tells why.
        if tornado.web.decode_signed_value(secret, ID_COOKIE, cookie, math.inf):
            return "Signature expired: reload the page"
        return "Signature not valid (forged or tampered)"
    if signed != client_id.encode():
        return "Signature is for another Id"
    return None
