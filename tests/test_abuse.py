"""Every bad behaviour at once, against a real server process, for a few seconds."""

from __future__ import annotations

import asyncio
import collections
import os
import random
import re
import socket
import time
from typing import Any

from clients import PING, TEXT, RawClient
from support import gaps, get_json, tick_slots
from tornado.httpclient import HTTPClientError
from tornado.websocket import WebSocketClientConnection, websocket_connect

INTERVAL = 0.02
GOOD = 4  # well-behaved clients, connected before the trouble starts
MAX_CLIENTS = 16
MAX_SIZE = 1024
RATE = 10
DURATION = 3.0  # seconds of trouble
FORGED = "[E 000101 00:00:00 app:1] forged line"

OPTIONS = (
    f"--interval={INTERVAL}",
    f"--max_clients={MAX_CLIENTS}",
    f"--max_message_size={MAX_SIZE}",
    f"--max_messages_per_second={RATE}",
    "--ping_interval=0.5",
    "--ping_timeout=0.5",
    "--slow_client_timeout=0.5",
    "--allowed_origins=https://school.example",
)


class Trouble:
    """The bad clients, each a loop bounded in count and in time, and what they saw."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"ws://127.0.0.1:{port}/websocket"
        self.deadline = time.monotonic() + DURATION
        self.refusals_sent: collections.Counter[str] = collections.Counter()
        self.statuses: collections.Counter[int] = collections.Counter()
        self.close_codes: dict[str, collections.Counter[int | None]] = collections.defaultdict(
            collections.Counter
        )
        self.held: list[RawClient] = []  # peers that never hang up by themselves
        self.sockets: list[socket.socket] = []
        self.flood_ids: list[str] = []

    def going(self, count: int, limit: int) -> bool:
        return count < limit and time.monotonic() < self.deadline

    async def connect(self, client_id: str) -> WebSocketClientConnection | None:
        """Connect with Tornado's client; None (and the status counted) if refused."""
        try:
            return await websocket_connect(f"{self.url}?Id={client_id}")
        except HTTPClientError as error:
            self.statuses[error.code] += 1
            return None

    async def raw(self, client_id: str, **kwargs: Any) -> RawClient | None:
        status, raw = await RawClient.connect(self.port, client_id, **kwargs)
        if status != 101:
            self.statuses[status] += 1
            raw.close()
            return None
        return raw

    async def closed_with(self, kind: str, connection: WebSocketClientConnection) -> None:
        while await connection.read_message() is not None:
            pass
        self.close_codes[kind][connection.close_code] += 1
        connection.close()  # Tornado's client counts itself open until told

    async def flooder(self, k: int) -> None:
        n = 0
        while self.going(n, 20):
            n += 1
            self.flood_ids.append(f"flood{k}-{n}")
            connection = await self.connect(self.flood_ids[-1])
            if connection is not None:
                writes = [connection.write_message(f"spam {i}") for i in range(3 * RATE)]
                await self.closed_with("flood", connection)
                await asyncio.gather(*writes, return_exceptions=True)
            await asyncio.sleep(0.05)

    async def binary(self) -> None:
        n = 0
        while self.going(n, 30):
            n += 1
            connection = await self.connect(f"binary{n}")
            if connection is not None:
                await connection.write_message(b"\x00\xff", binary=True)
                await self.closed_with("binary", connection)
            await asyncio.sleep(0.05)

    async def oversize(self) -> None:
        n = 0
        while self.going(n, 30):
            n += 1
            connection = await self.connect(f"big{n}")
            if connection is not None:
                write = connection.write_message("x" * (MAX_SIZE + 1))
                await self.closed_with("oversize", connection)
                await asyncio.gather(write, return_exceptions=True)
            await asyncio.sleep(0.05)

    async def garbled(self) -> None:
        n = 0
        while self.going(n, 30):
            n += 1
            raw = await self.raw(f"garbled{n}")
            if raw is not None:
                await raw.send_frame(TEXT, b"\xff\xfe not UTF-8")
                try:
                    await raw.read_all()
                finally:
                    raw.close()
            await asyncio.sleep(0.05)

    async def takeover(self) -> None:
        n = 0
        while self.going(n, 30):
            n += 1
            first = await self.connect(f"dup{n}")
            if first is not None:
                second = await self.connect(f"dup{n}")
                await self.closed_with("replaced", first)
                if second is not None:
                    second.close()
                    await self.closed_with("closed", second)
            await asyncio.sleep(0.05)

    async def resetter(self) -> None:
        """Hang up with a reset at a random moment, most likely between two writes of a tick."""
        n = 0
        while self.going(n, 60):
            n += 1
            raw = await self.raw(f"reset{n}")
            if raw is not None:
                await asyncio.sleep(random.uniform(0, 2 * INTERVAL))
                raw.abort()
            await asyncio.sleep(0.03)

    async def refused(self) -> None:
        """Missing and bad Ids (always 400), and a foreign origin (403, or 503 when full)."""
        attempts = [
            ("missing_id", "", None),
            ("bad_id", "line\nbreak", None),
            ("bad_id", "x" * 65, None),
            ("bad_id", "tab\there", None),
            ("origin", "intruder", {"Origin": "https://evil.example"}),
            ("origin", "intruder", {"Origin": "https://school.example.evil.example"}),
        ]
        n = 0
        while self.going(n, 60):
            kind, client_id, headers = attempts[n % len(attempts)]
            n += 1
            self.refusals_sent[kind] += 1
            assert await self.raw(client_id, headers=headers) is None
            await asyncio.sleep(0.03)

    async def burst(self) -> None:
        """Many connections at once, past max_clients, held a moment."""
        await asyncio.sleep(DURATION / 3)
        results = await asyncio.gather(*(self.connect(f"burst{i}") for i in range(MAX_CLIENTS)))
        await asyncio.sleep(0.2)
        for connection in results:
            if connection is not None:
                connection.close()
                await self.closed_with("closed", connection)

    async def hold(self) -> None:
        """Peers that stay: they vanish, never read, flood pings, or stop mid-frame."""
        for n in range(2):
            vanished = await self.raw(f"vanished{n}", rcvbuf=1)
            if vanished is not None:
                self.held.append(vanished)
        pinger = await self.raw("pinger", rcvbuf=1)
        if pinger is not None:
            self.held.append(pinger)
            for _ in range(300):
                await pinger.send_frame(PING, os.urandom(125))
        stuck = await self.raw("half-frame")
        if stuck is not None:
            self.held.append(stuck)
            await stuck.send_frame(TEXT, b"x" * 100)
            # Resend a header that promises 100 bytes, then only 10 of them.
            frame = b"\x81\xe4" + b"\0\0\0\0" + b"y" * 10
            await asyncio.get_running_loop().sock_sendall(stuck.sock, frame)
        # A handshake that never ends.
        sock = socket.create_connection(("127.0.0.1", self.port))
        self.sockets.append(sock)
        sock.sendall(b"GET /websocket?Id=slowloris HTTP/1.1\r\nHost: x\r\n")

    def hang_up(self) -> None:
        for raw in self.held:
            raw.abort()
        for sock in self.sockets:
            sock.close()


class Good:
    """A well-behaved client: it reads every tick and chats now and then, within the rate."""

    def __init__(self, connection: WebSocketClientConnection, name: str) -> None:
        self.connection = connection
        self.name = name
        self.ticks: list[str] = []

    async def read(self) -> None:
        while (message := await self.connection.read_message()) is not None:
            self.ticks.append(message)

    async def chat(self, until: float) -> None:
        while time.monotonic() < until:
            await self.connection.write_message(f"hello from {self.name}\n{FORGED}")
            await asyncio.sleep(0.25)


async def scenario(url: str, port: int) -> dict[str, Any]:
    good = []
    for i in range(GOOD):
        connection = await websocket_connect(f"ws://127.0.0.1:{port}/websocket?Id=good{i}")
        good.append(Good(connection, f"good{i}"))
    readers = [asyncio.ensure_future(client.read()) for client in good]

    trouble = Trouble(port)
    actors = [
        trouble.flooder(0),
        trouble.flooder(1),
        trouble.binary(),
        trouble.oversize(),
        trouble.garbled(),
        trouble.takeover(),
        trouble.resetter(),
        trouble.refused(),
        trouble.burst(),
        trouble.hold(),
        *(client.chat(trouble.deadline) for client in good),
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*actors), DURATION + 5)
        # Let the trouble run its course, then hang up the peers that would linger.
        await asyncio.sleep(max(0.0, trouble.deadline - time.monotonic()))
    finally:
        trouble.hang_up()

    # The count of clients must come back to the truth: the well-behaved ones still open.
    deadline = time.monotonic() + 3
    stats = await asyncio.to_thread(get_json, url + "/stats")
    while stats["clients"] != GOOD and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        stats = await asyncio.to_thread(get_json, url + "/stats")
    still_open = [
        c.name for c in good if c.connection.protocol and not c.connection.protocol.is_closing()
    ]

    for client in good:
        client.connection.close()
    await asyncio.wait_for(asyncio.gather(*readers), 5)
    return {
        "stats": stats,
        "still_open": still_open,
        "ticks": {client.name: client.ticks for client in good},
        "trouble": trouble,
    }


def test_mixed_abuse(start_server) -> None:
    """Under every bad behaviour at once the good clients get every tick and the log stays clean."""
    server = start_server(*OPTIONS)
    result = asyncio.run(scenario(server.url, server.port))
    stats, trouble = result["stats"], result["trouble"]

    # Every well-behaved client is still open and got every tick, one interval apart. The one
    # excuse is the server's own: on a machine too busy to wake its SendThread in time it skips
    # (and counts) late ticks, for everyone alike.
    assert result["still_open"] == [f"good{i}" for i in range(GOOD)]
    late = stats["ticks_skipped_late"]
    assert late <= 0.1 * stats["ticks"]
    received = list(result["ticks"].values())
    common = max(ticks[0] for ticks in received), min(ticks[-1] for ticks in received)
    for name, ticks in result["ticks"].items():
        assert len(ticks) > 0.8 * DURATION / INTERVAL, name
        slots = tick_slots(ticks, INTERVAL)
        assert all(b > a for a, b in zip(slots, slots[1:])), name
        missing = sum(b - a - 1 for a, b in gaps(slots))
        assert missing <= late, (name, gaps(slots), late)
        window = [tick for tick in ticks if common[0] <= tick <= common[1]]
        assert window == [tick for tick in received[0] if common[0] <= tick <= common[1]], name

    # /stats matches what happened.
    assert stats["clients"] == GOOD
    assert trouble.statuses[403] > 0 and trouble.statuses[503] > 0  # both were exercised
    assert set(trouble.statuses) <= {400, 403, 503}
    expected = {
        "missing_id": trouble.refusals_sent["missing_id"],
        "bad_id": trouble.refusals_sent["bad_id"],
        "origin": trouble.statuses[403],
        "full": trouble.statuses[503],
    }
    assert stats["refused"] == {reason: n for reason, n in expected.items() if n}
    assert trouble.statuses[400] == expected["missing_id"] + expected["bad_id"]
    assert trouble.statuses[403] <= trouble.refusals_sent["origin"]

    # Each bad client was closed the documented way.
    assert set(trouble.close_codes["flood"]) == {1008}
    assert set(trouble.close_codes["binary"]) == {1003}
    assert set(trouble.close_codes["oversize"]) == {1009}
    assert set(trouble.close_codes["replaced"]) == {4000}

    # The server shuts down cleanly, and nothing in its log is an error or a traceback.
    assert server.stop() == 0
    lines = server.log.splitlines()
    problems = [
        line
        for line in lines
        if line.startswith("[E ") or re.search(r"Traceback|Task exception|ERROR", line)
    ]
    assert problems == []
    # A message cannot forge a log line, and a flood is cut short: its burst of RATE, plus
    # the tokens that refill while a busy machine reads it (test_messages pins the exact burst).
    assert not [line for line in lines if line.startswith(FORGED)]
    for flood_id in trouble.flood_ids:
        logged = [line for line in lines if f"Message from '{flood_id}'" in line]
        assert len(logged) < 2 * RATE, flood_id
