"""Peers that stop playing their part: they vanish, stop reading, or hang up mid-fan-out."""

from __future__ import annotations

import asyncio
import datetime
import socket
import time
from typing import Any, ClassVar

from clients import CLOSE, PING, TEXT, parse_close
from servers import ServerTestCase
from tornado.testing import gen_test

import app
from timepush import fastpath

# The longest tick, "2024-01-01 12:00:00.000000", as a frame.
TICK_FRAME = len(fastpath.encode_text_frame(str(datetime.datetime.now().replace(microsecond=1))))


class TestKeepAlive(ServerTestCase):
    app_settings: ClassVar[dict[str, Any]] = {
        "websocket_ping_interval": 0.05,
        "websocket_ping_timeout": 0.05,
    }

    @gen_test(timeout=10)
    async def test_vanished_peer_dropped(self) -> None:
        """A peer that never answers pings is closed, then dropped from clients; others stay."""
        alive = self.keep_reading(await self.connect("alive"))  # it answers pings
        vanished = await self.raw_connect("vanished")
        handler = app.clients["vanished"]["object"]
        started = time.monotonic()
        await self.wait_until(
            lambda: handler.ws_connection is None or handler.ws_connection.is_closing(),
            timeout=1.0,
            message="the server kept an unanswering peer open",
        )
        # Tornado now waits up to 5 s for the close reply before it drops the socket.
        await self.wait_until(lambda: "vanished" not in app.clients, timeout=7.0)
        self.assertLess(time.monotonic() - started, 6.5)
        self.assertEqual(list(app.clients), ["alive"])

        frames = await vanished.read_all()
        opcodes = [opcode for opcode, _ in frames]
        self.assertIn(PING, opcodes)
        self.assertEqual(opcodes[-1], CLOSE)
        self.assertGreater(len(alive), 100)
        self.assertFalse(app.clients["alive"]["object"].ws_connection.is_closing())

    def test_default_keep_alive(self) -> None:
        """Without options, pings go out every 20 s and a pong may take 20 s."""
        settings = app.make_app().settings
        self.assertEqual(settings["websocket_ping_interval"], 20)
        self.assertEqual(settings["websocket_ping_timeout"], 20)


class TestSlowConsumer(ServerTestCase):
    # Fast ticks, so a client that never reads fills the socket buffers within a second.
    interval = 0.005
    app_settings: ClassVar[dict[str, Any]] = {"slow_client_timeout": 0.1}

    @gen_test
    async def test_slow_consumer(self) -> None:
        """A non-reader has at most one tick buffered, skips are counted, then it gets 1008."""
        bystander = self.keep_reading(await self.connect("bystander"))
        slow = await self.raw_connect("slow", rcvbuf=1)
        handler = app.clients["slow"]["object"]
        # Shrink the server's side too: Linux lets a loopback socket buffer megabytes, which
        # would take minutes of 28-byte ticks to fill. What the app buffers is the same.
        handler.ws_connection.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)

        largest = 0
        deadline = time.monotonic() + 3
        while not app.stats.closed and time.monotonic() < deadline:
            largest = max(largest, len(handler.ws_connection.stream._write_buffer))
            await asyncio.sleep(0.001)
        self.assertGreater(largest, 0)  # the buffers did fill
        self.assertLessEqual(largest, TICK_FRAME)
        self.assertGreater(app.stats.ticks_skipped_slow, 0)
        self.assertEqual(app.stats.closed, {"slow": 1})

        # Once it reads again it finds ticks and then the close frame that says why.
        frames = await slow.read_until_close()
        closes = [parse_close(payload) for opcode, payload in frames if opcode == CLOSE]
        self.assertEqual(closes, [(app.CLOSE_POLICY_VIOLATION, "Not reading ticks")])
        self.assertEqual({opcode for opcode, _ in frames}, {TEXT, CLOSE})
        await self.wait_until(lambda: list(app.clients) == ["bystander"])
        self.assertGreater(len(bystander), app.stats.ticks / 2)


class TestDisconnectMidFanout(ServerTestCase):
    @gen_test
    async def test_reset_before_fanout(self) -> None:
        """A tick written to peers that have just reset closes them quietly, leaving no entry."""
        bystander = await self.connect("bystander")
        raws = [await self.raw_connect(f"raw{i}") for i in range(6)]
        self.thread.stop()
        self.thread.join()
        for raw in raws[::2]:
            raw.abort()
        # Keep the loop from reading the resets: the fan-out below must be first to meet them.
        time.sleep(0.01)
        app.send_to_all("tick")
        for i in range(0, 6, 2):
            connection = app.clients[f"raw{i}"]["object"].ws_connection
            self.assertTrue(connection is None or connection.stream.closed(), f"raw{i}")
        await self.wait_until(lambda: len(app.clients) == 4)
        self.assertEqual(sorted(app.clients), ["bystander", "raw1", "raw3", "raw5"])

        app.send_to_all("after")
        messages = []
        while (message := await self.read(bystander)) != "after":
            messages.append(message)
        self.assertEqual(messages[-1:], ["tick"])
        for raw in raws[1::2]:  # the others got both
            payloads = []
            while b"after" not in payloads:
                payloads.append((await raw.read_frame())[1])
            self.assertIn(b"tick", payloads)
