"""Limits on what a client sends after the handshake: size, type, encoding and rate."""

from __future__ import annotations

import ast
import asyncio
from typing import Any, ClassVar

from clients import BINARY, CLOSE, TEXT, parse_close
from hypothesis import given, settings
from hypothesis import strategies as st
from servers import ServerTestCase
from support import TICK, gaps, tick_slots
from tornado.testing import gen_test

import app

MAX_SIZE = 1024


class TestMessageSize(ServerTestCase):
    app_settings: ClassVar[dict[str, Any]] = {"websocket_max_message_size": MAX_SIZE}

    @gen_test
    async def test_message_too_big(self) -> None:
        """A message one byte over the limit closes its sender with 1009; others keep ticking."""
        bystander = await self.connect("bystander")
        sender = await self.connect("big")
        await sender.write_message("x" * MAX_SIZE)  # at the limit: accepted
        await self.wait_until(lambda: app.stats.messages_received == 1)
        await sender.write_message("x" * (MAX_SIZE + 1))
        await self.read_until_closed(sender)
        self.assertEqual(sender.close_code, 1009)
        await self.wait_until(lambda: list(app.clients) == ["bystander"])
        self.assertEqual(app.stats.messages_received, 1)
        for _ in range(3):
            self.assertIsNotNone(await self.read(bystander))
        self.assertFalse(app.clients["bystander"]["object"].ws_connection.is_closing())

    def test_default_max_message_size(self) -> None:
        """Without --max_message_size a message may be up to 64 KiB."""
        self.assertEqual(app.make_app().settings["websocket_max_message_size"], 64 * 1024)


class TestMessageType(ServerTestCase):
    @gen_test
    async def test_binary_message(self) -> None:
        """A binary frame is refused with close code 1003 and a reason, without a traceback."""
        connection = await self.connect("bin")
        await connection.write_message(b"\x00\x01\x02", binary=True)
        await self.read_until_closed(connection)
        self.assertEqual(connection.close_code, app.CLOSE_UNSUPPORTED_DATA)
        self.assertEqual(connection.close_reason, "Only text messages are accepted")
        await self.wait_until(lambda: not app.clients)
        self.assertEqual(app.stats.closed, {"binary": 1})

    @gen_test
    async def test_invalid_utf8_text(self) -> None:
        """A text frame that is not UTF-8 makes Tornado hang up at once, quietly."""
        raw = await self.raw_connect("garbled")
        await raw.send_frame(TEXT, b"caf\xc3 \xff\xfe")
        frames = await raw.read_all()
        self.assertNotIn(CLOSE, [opcode for opcode, _ in frames])
        self.assertEqual({opcode for opcode, _ in frames} - {TEXT}, set())
        await self.wait_until(lambda: not app.clients)
        self.assertEqual(app.stats.messages_received, 0)

    @gen_test
    async def test_binary_frame_raw_peer(self) -> None:
        """Seen on the wire, the refusal of binary data is a close frame with 1003."""
        raw = await self.raw_connect("bin")
        await raw.send_frame(BINARY, b"\xff" * 10)
        frames = await raw.read_until_close()
        close = [payload for opcode, payload in frames if opcode == CLOSE]
        self.assertEqual(
            [parse_close(p) for p in close],
            [(app.CLOSE_UNSUPPORTED_DATA, "Only text messages are accepted")],
        )


class TestFlood(ServerTestCase):
    app_settings: ClassVar[dict[str, Any]] = {"max_messages_per_second": 10}

    @gen_test
    async def test_flood_closed(self) -> None:
        """A client past its message rate is closed with 1008; others miss no tick meanwhile."""
        bystander = await self.connect("bystander")
        ticks = [await self.read(bystander)]
        flooder = await self.connect("flood")
        writes = [flooder.write_message(f"spam {i}") for i in range(500)]
        await self.read_until_closed(flooder)
        await asyncio.gather(*writes, return_exceptions=True)
        self.assertEqual(flooder.close_code, app.CLOSE_POLICY_VIOLATION)
        self.assertEqual(flooder.close_reason, "Too many messages")

        ticks += [await self.read(bystander) for _ in range(10)]
        self.assertEqual(gaps(tick_slots(ticks, TICK)), [])
        await self.wait_until(lambda: list(app.clients) == ["bystander"])
        self.assertEqual(app.stats.closed, {"flood": 1})

    @gen_test
    async def test_flood_log_bounded(self) -> None:
        """However much a client sends, it gets at most its rate of log lines and one warning."""
        flooder = await self.connect("flood")
        writes = [flooder.write_message(f"spam {i}") for i in range(500)]
        await self.read_until_closed(flooder)
        await asyncio.gather(*writes, return_exceptions=True)
        await self.wait_until(lambda: not app.clients)
        messages = [m for m in self.log.messages() if m.startswith("Message from 'flood'")]
        warnings = [m for m in self.log.messages() if "too many messages" in m]
        self.assertLessEqual(len(messages), 10)
        self.assertEqual(len(warnings), 1)
        self.assertEqual(app.stats.messages_received, len(messages) + 1)


class TestSteadyRate(ServerTestCase):
    app_settings: ClassVar[dict[str, Any]] = {"max_messages_per_second": 50}

    @gen_test
    async def test_steady_rate_not_closed(self) -> None:
        """A full burst and then messages steadily below the rate are all accepted."""
        connection = await self.connect("steady")
        for i in range(50):
            await connection.write_message(f"burst {i}")
        for i in range(20):  # about 33 a second, against a limit of 50 a second
            await asyncio.sleep(0.03)
            await connection.write_message(f"steady {i}")
        await self.wait_until(lambda: app.stats.messages_received == 70)
        self.assertEqual(app.stats.closed, {})
        self.assertIsNotNone(await self.read(connection))
        self.assertFalse(app.clients["steady"]["object"].ws_connection.is_closing())


class TestMessagesLogged(ServerTestCase):
    app_settings: ClassVar[dict[str, Any]] = {"max_messages_per_second": 10_000}

    @settings(max_examples=50, deadline=None, database=None)
    @given(message=st.text(max_size=300))
    def test_text_messages_logged_on_one_line(self, message: str) -> None:
        """Any text message within the limits is accepted and logged escaped, on one line."""
        self.io_loop.run_sync(lambda: self.check_message(message))

    async def check_message(self, message: str) -> None:
        if not self.connections:
            await self.connect("talker")
        [connection] = self.connections
        self.log.records.clear()
        await connection.write_message(message)
        await self.wait_until(lambda: any(m.startswith("Message") for m in self.log.messages()))
        [logged] = [m for m in self.log.messages() if m.startswith("Message")]
        self.assertEqual(logged.splitlines(), [logged])
        prefix = f"Message from 'talker' ({len(message)} chars): "
        self.assertTrue(logged.startswith(prefix), logged)
        self.assertEqual(ast.literal_eval(logged[len(prefix) :]), message[:200])
        self.assertFalse(app.clients["talker"]["object"].ws_connection.is_closing())
