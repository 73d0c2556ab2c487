"""What every test shares: where the project is, the units of time, ports, and ticks.

What starts the things under test lives beside it, one module each:

- ``servers``: the real app on the test's IOLoop (``ServerTestCase``), and ``python app.py`` in a
  child process (``ServerProcess``);
- ``clients``: ``RawClient``, a WebSocket client on a bare socket for peers that misbehave,
  ``Reader``, one that reads everything in the background, and ``Returner``, one that comes back
  after a restart as the page does;
- ``rolling``: a rolling restart of nodes behind nginx, with the figures of what clients saw;
- ``nginx_process``: Debian's nginx in the foreground, its files in a temp dir, and the
  shipped site with its ``# CHANGE`` lines filled in;
- ``redis_process``: Debian's ``redis-server``, for the cluster tests;
- ``prometheus_process``: Debian's ``promtool`` and ``prometheus``, for the monitoring tests;
- ``chromium``: Debian's Chromium for the browser tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import math
import os
import socket
import threading
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import quote

from tornado.websocket import WebSocketClientConnection

ROOT = Path(__file__).resolve().parents[1]


# Every timing in the tests is a multiple of MS. On a slow machine TEST_TIME_SCALE=3 makes the
# whole suite three times as patient, intervals and timeouts alike.
MS = 0.001 * float(os.environ.get("TEST_TIME_SCALE", "1"))
TICK = 20 * MS  # the tick interval of most tests: nothing here sleeps whole seconds
TIMEOUT = 2000 * MS  # how long a test waits for something that should happen at once


def ws_url(port: int, client_id: str | None) -> str:
    """The WebSocket address for ``client_id`` (None leaves the Id argument out)."""
    query = "" if client_id is None else "?Id=" + quote(client_id, safe="")
    return f"ws://127.0.0.1:{port}/websocket{query}"


async def hang_up(connection: WebSocketClientConnection) -> None:
    """Close an open connection and wait for the server's answer, so no socket outlives the loop."""
    connection.close()
    while await asyncio.wait_for(connection.read_message(), TIMEOUT) is not None:
        pass


def get_json(url: str) -> Any:
    """GET ``url`` and decode its JSON body (blocking: for tests that drive a child process)."""
    with urllib.request.urlopen(url, timeout=TIMEOUT * 5) as response:
        return json.load(response)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on at ``host`` right now, for a program that takes no port 0."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def on_ci() -> bool:
    """Whether the environment variable CI is set (not empty, "0" or "false")."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def boundary_index(text: str, interval: float) -> tuple[int, float]:
    """The multiple of ``interval`` a pushed text belongs to, and how long after it was taken.

    The SendThread wakes at (or just after) each multiple of the interval on the wall clock and
    sends ``str(datetime.now())``, so a tick that is late by less than an interval still maps to
    its own multiple, and consecutive ticks map to consecutive numbers. (The 1% margin absorbs
    the text's truncation to microseconds.)
    """
    taken = datetime.datetime.fromisoformat(text).timestamp()
    index = math.floor(taken / interval + 0.01)
    return index, taken - index * interval


def tick_slots(texts: Iterable[str], interval: float) -> list[int]:
    """Number each tick by the multiple of ``interval`` it was sent at."""
    return [boundary_index(text, interval)[0] for text in texts]


def gaps(slots: list[int]) -> list[tuple[int, int]]:
    """The pairs of consecutive slots that are not one apart."""
    return [(a, b) for a, b in zip(slots, slots[1:]) if b - a != 1]


@contextlib.contextmanager
def recording_sends(port: int) -> Iterator[list[tuple[int, bytes]]]:
    """Record what the server on ``port`` sends to its clients, with the thread that sent it.

    The tick's loop sends on the socket itself and Tornado's IOStream does the same, so patching
    ``socket.send()`` sees every byte. Other sockets of the process (test clients, the loop's
    wake-up pipe, which the SendThread writes to) are left out by their local port.
    """
    sends: list[tuple[int, bytes]] = []
    original = socket.socket.send

    def recording_send(sock: socket.socket, data: Any, *flags: int) -> int:
        if sock.family == socket.AF_INET and sock.getsockname()[1] == port:
            sends.append((threading.get_ident(), bytes(data)))
        return original(sock, data, *flags)

    with mock.patch.object(socket.socket, "send", recording_send):
        yield sends


def server_text_frames(sends: Iterable[tuple[int, bytes]]) -> list[str]:
    """The texts of the short, unmasked text frames among ``sends``: what a server writes."""
    return [data[2:].decode() for _, data in sends if data[:1] == b"\x81" and data[1] < 126]
