"""The tick's fast path (``timepush/fastpath.py``): the index it goes through beside ``clients``,
the fallback to Tornado's public API, and what a connection keeps."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import logging
import random
import socket
import weakref
from typing import Any, ClassVar
from unittest import mock

import tornado
import tornado.iostream
from clients import BINARY, CLOSE, TEXT
from servers import ServerTestCase
from support import MS
from tornado.httpclient import HTTPRequest
from tornado.testing import gen_test
from tornado.websocket import websocket_connect

import app
from timepush import fastpath


def out_of_step() -> list[str]:
    """The Ids on which ``clients`` and ``targets`` disagree about the handler."""
    handlers = {client_id: entry["object"] for client_id, entry in app.clients.items()}
    indexed = app.targets.handlers()
    return sorted(
        client_id
        for client_id in handlers.keys() | indexed.keys()
        if handlers.get(client_id) is not indexed.get(client_id)
    )


class TestTargets(ServerTestCase):
    interval = 60.0  # the test ticks itself, between and during every step of the churn
    app_settings: ClassVar[dict[str, Any]] = {"max_messages_per_second": 1000}

    @gen_test(timeout=60)
    async def test_churn(self) -> None:
        """After connects, takeovers, resets and closes in and between ticks, both hold the same."""
        chance = random.Random(12)
        drift: list[list[str]] = []
        ticks = 0
        send = socket.socket.send

        def closing_send(sock: socket.socket, data: Any, *flags: int) -> int:
            # Now and then, close some client in the middle of a tick, as a takeover would.
            if app.targets and chance.random() < 0.02:
                chance.choice(list(app.targets.handlers().values())).close(1001, "mid-tick")
            return send(sock, data, *flags)

        async def tick() -> None:
            nonlocal ticks
            while True:
                with mock.patch.object(socket.socket, "send", closing_send):
                    app.send_to_all(str(datetime.datetime.now()))
                ticks += 1
                if out_of_step():
                    drift.append(out_of_step())
                await asyncio.sleep(2 * MS)

        ticking = asyncio.ensure_future(tick())
        try:
            raws = []
            for step in range(120):
                client_id = f"c{chance.randrange(6)}"  # few Ids, so many takeovers
                action = chance.choice(("connect", "connect", "raw", "close", "reset", "binary"))
                if action == "connect":
                    self.keep_reading(await self.connect(client_id))
                elif action == "raw" or not raws:
                    raws.append(await self.raw_connect(client_id))
                elif action == "close":
                    raws.pop(chance.randrange(len(raws))).close()
                elif action == "reset":
                    raws.pop(chance.randrange(len(raws))).abort()
                else:  # the server closes it (it takes no binary data); reset at the end
                    with contextlib.suppress(OSError):  # unless the server has hung up already
                        await chance.choice(raws).send_frame(BINARY, b"\0")
                self.assertEqual(out_of_step(), [], f"step {step}: {action} {client_id}")
                await asyncio.sleep(chance.random() * 5 * MS)
            await self.wait_until(lambda: ticks >= 50, message="ticks during the churn")
            for raw in raws:
                raw.abort()
            for connection in self.connections:
                connection.close()
            await self.wait_until(lambda: not app.clients, message="every client gone")
        finally:
            ticking.cancel()
        self.assertEqual(app.targets.handlers(), {})
        self.assertEqual(drift, [])
        self.assertGreater(app.stats.closed["replaced"], 10)


class TestClose(ServerTestCase):
    interval = 2 * MS

    @gen_test
    async def test_nothing_after_close(self) -> None:
        """Once the server has sent its close frame, no tick follows it on that connection."""
        raw = await self.raw_connect("leaving")
        await raw.read_frame()  # ticks are flowing
        await raw.send_frame(BINARY, b"\0")
        await asyncio.sleep(10 * self.interval)  # ticks that must not reach it
        frames = await raw.read_until_close()
        opcodes = [opcode for opcode, _ in frames]
        self.assertIn(CLOSE, opcodes)
        self.assertLessEqual(set(opcodes[: opcodes.index(CLOSE)]), {TEXT})
        self.assertEqual(opcodes[opcodes.index(CLOSE) :], [CLOSE])
        await self.wait_until(lambda: not app.clients)


class TestClosedUnderneath(ServerTestCase):
    interval = 60.0  # no tick of its own: the test calls send_to_all itself

    @gen_test
    async def test_idle_stream_closed(self) -> None:
        """A tick between a stream's close and its connection's noticing it goes to the others."""
        await self.tick_after_close(pending=False)

    @gen_test
    async def test_busy_stream_closed(self) -> None:
        """The same, for a stream that still had bytes queued when it closed."""
        await self.tick_after_close(pending=True)

    async def tick_after_close(self, pending: bool) -> None:
        await self.raw_connect("gone", rcvbuf=4096)  # never reads
        steady = self.keep_reading(await self.connect("steady"))
        handler = app.clients["gone"]["object"]
        connection, stream, sock = app.targets.by_id["gone"]
        self.assertIs(connection, handler.ws_connection)
        if pending:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            stream.write(fastpath.encode_text_frame("x" * 200_000))
            self.assertTrue(stream.writing())
        stream.close()  # as a read error would; the connection hears of it a moment later
        self.assertFalse(connection.server_terminated)
        app.send_to_all("2001-01-01 00:00:00")  # that moment
        await self.wait_until(lambda: "2001-01-01 00:00:00" in steady)
        await self.wait_until(lambda: "gone" not in app.clients)
        self.assertEqual(app.stats.ticks_sent, 1)


held: list[Any] = []  # weak references to the HTTP connections that WatchedHandler opened


class WatchedHandler(app.MyWebSocketHandler):
    """The app's handler, noting the HTTP connection it had before open() lets go of it."""

    def open(self) -> None:
        held.append(weakref.ref(self.request.connection))
        super().open()


class BrokenHandler(app.MyWebSocketHandler):
    """The app's handler, with a bug that shows on the first message."""

    def take_token(self) -> bool:
        raise KeyError("x")


class TestAfterHandshake(ServerTestCase):
    def get_app(self) -> Any:
        application = super().get_app()
        application.add_handlers(
            r".*", [(r"/watched", WatchedHandler), (r"/broken", BrokenHandler)]
        )
        return application

    @gen_test
    async def test_handshake_forgotten(self) -> None:
        """An open connection keeps neither its HTTP connection nor the handshake's headers."""
        held.clear()
        url = self.get_url("/watched?Id=light").replace("http", "ws", 1)
        request = HTTPRequest(url, headers={"User-Agent": "test"})
        connection = await websocket_connect(request)
        self.connections.append(connection)
        await self.read_ticks(connection, 2)
        gc.collect()
        self.assertEqual([ref() for ref in held], [None])
        request = app.clients["light"]["object"].request
        self.assertEqual((dict(request.headers), request.arguments), ({}, {}))

    @gen_test
    async def test_error_after_open(self) -> None:
        """An exception after the handshake is still logged with the request it came from."""
        connection = await websocket_connect(self.get_url("/broken?Id=boom").replace("http", "ws"))
        self.connections.append(connection)
        await connection.write_message("hello")
        await self.read_until_closed(connection)
        await self.wait_until(lambda: not app.clients)
        errors = [r for r in self.log.records if r.levelno >= logging.ERROR]
        self.assertEqual(len(errors), 1)
        self.assertIn("GET /broken?Id=boom (127.0.0.1)", errors[0].getMessage())
        self.assertIn("remote_ip='127.0.0.1'", errors[0].getMessage())
        self.log.records.remove(errors[0])  # expected here


class TestSlowThenFast(ServerTestCase):
    interval = 5 * MS  # a client that never reads fills the socket buffers quickly
    app_settings: ClassVar[dict[str, Any]] = {"slow_client_timeout": 60.0}

    @gen_test
    async def test_drained(self) -> None:
        """A client that catches up after skipped ticks starts its slow-consumer count afresh."""
        slow = await self.raw_connect("slow", rcvbuf=1)
        handler = app.clients["slow"]["object"]
        # As in test_slow_consumer: a small send buffer, so the stream queues within a few ticks.
        handler.ws_connection.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
        await self.wait_until(lambda: handler.undrained_since is not None, message="skipped")

        done = False

        async def read_on() -> None:
            while not done and await slow.read_frame() is not None:
                pass

        reading = asyncio.ensure_future(read_on())
        try:
            await self.wait_until(lambda: handler.undrained_since is None, message="drained")
            ticks_sent = app.stats.ticks_sent
            await self.wait_until(lambda: app.stats.ticks_sent > ticks_sent + 2)
        finally:
            # The reader must be over before tearDown closes its socket. Python 3.9's wait_for
            # can swallow a cancel that meets a frame, hence the flag as well.
            done = True
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
        self.assertEqual(app.stats.closed, {})


class CountersThatLie(tornado.iostream.IOStream):
    """An IOStream whose write counters no longer move, as after a rename in a new Tornado."""

    @property
    def _total_write_index(self) -> int:  # type: ignore[override]
        return 0

    @_total_write_index.setter
    def _total_write_index(self, value: int) -> None:
        pass


class TestInternalsCheck(ServerTestCase):
    interval = 5 * MS

    def test_this_tornado_passes(self) -> None:
        """On the Tornado installed, what the fast path reads is there and means what it says."""
        self.assertIsNone(fastpath.internals_problem(tornado.iostream.IOStream))
        app.targets.check()
        self.assertTrue(app.targets.internals)
        self.assertEqual([m for m in self.log.messages() if "public API" in m], [])

    @gen_test
    async def test_fallback_ticks_everyone(self) -> None:
        """When the check fails, one warning names Tornado's version, and every client still
        ticks, through the public API; a client that does not read is still skipped."""
        app.targets.check(CountersThatLie)
        self.assertFalse(app.targets.internals)
        warnings = [m for m in self.log.messages() if "public API" in m]
        self.assertEqual(len(warnings), 1)
        self.assertIn(f"Tornado {tornado.version}", warnings[0])
        self.assertIn("write counters", warnings[0])
        slow = await self.raw_connect("slow", rcvbuf=1)
        app.clients["slow"]["object"].ws_connection.stream.socket.setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 1
        )
        readers = [await self.connect(f"c{n}") for n in range(3)]
        for reader in readers:
            self.assertEqual(len(await self.read_ticks(reader, 3)), 3)
        await self.wait_until(lambda: app.stats.ticks_skipped_slow > 0, message="slow skipped")
        slow.abort()
