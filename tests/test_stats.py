"""``/stats``: what the server reports for health checks and the benchmark."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from support import MS, ServerTestCase
from tornado.testing import gen_test


class TestStats(ServerTestCase):
    app_settings: ClassVar[dict[str, Any]] = {
        "max_clients": 2,
        "allowed_origins": ["https://a.example"],
    }

    @gen_test
    async def test_stats(self) -> None:
        """/stats gives the clients, ticks sent and skipped, refusals by reason, and uptime."""
        first = await self.connect("a")
        second = await self.connect("b")
        await self.refusal(None)
        await self.refusal("bad\n")
        await self.refusal("c")
        self.assertEqual((await self.refusal("a", {"Origin": "https://evil.example"}))[0], 403)
        received = 0
        for _ in range(3):
            await self.read(second)
            received += 1
        stats = await self.stats()
        self.assertEqual(stats["clients"], 2)
        self.assertEqual(stats["refused"], {"missing_id": 1, "bad_id": 1, "full": 1, "origin": 1})
        self.assertGreater(stats["uptime_seconds"], 0)
        self.assertGreaterEqual(stats["ticks_sent"], 3)
        self.assertEqual(stats["ticks_skipped_slow"], 0)

        # Stop the ticks, drain both clients, and the count of ticks sent is exact.
        self.thread.stop()
        self.thread.join()
        for connection in (first, second):
            while True:
                try:
                    await self.read(connection, timeout=200 * MS)
                except asyncio.TimeoutError:
                    break
                received += 1
        later = await self.stats()
        self.assertEqual(later["ticks_sent"], received)
        self.assertGreater(later["uptime_seconds"], stats["uptime_seconds"])
