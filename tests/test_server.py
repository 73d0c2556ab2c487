"""The article's program on current Tornado: each of its defects, pinned."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import inspect
import io
import logging
import signal
import socket
import threading
import time
from typing import Any

import pytest
import tornado.iostream
from servers import ServerTestCase
from support import (
    MS,
    TICK,
    TIMEOUT,
    boundary_index,
    hang_up,
    recording_sends,
    server_text_frames,
)
from tornado.httpclient import HTTPClientError
from tornado.testing import gen_test
from tornado.websocket import websocket_connect

import app
from timepush import fastpath


class TestPush(ServerTestCase):
    @gen_test
    async def test_receives_time(self) -> None:
        """A client that connects with an Id gets the server's time as text, tick after tick."""
        connection = await self.connect("reader")
        ticks = await self.read_ticks(connection, 3)
        stamps = [datetime.datetime.fromisoformat(text) for text in ticks]
        assert stamps == sorted(stamps) and len(set(stamps)) == 3
        assert abs(stamps[-1] - datetime.datetime.now()) < datetime.timedelta(seconds=1)
        assert list(app.clients) == ["reader"]
        assert app.clients["reader"]["id"] == "reader"

    @gen_test
    async def test_writes_on_loop_thread(self) -> None:
        """Every byte sent to a client, ticks included, is written by the IOLoop's thread."""
        with recording_sends(self.get_http_port()) as sends:
            connections = [await self.connect(f"c{n}") for n in range(3)]
            for connection in connections:
                await self.read_ticks(connection, 3)
        ticks = [datetime.datetime.fromisoformat(text) for text in server_text_frames(sends)]
        assert len(ticks) >= 9
        assert {thread for thread, _ in sends} == {threading.get_ident()}

    @gen_test
    async def test_thread_never_touches_clients(self) -> None:
        """The SendThread only hands work to the loop: every use of ``clients`` is on the loop."""
        users: set[str] = set()

        class WatchedDict(dict):
            pass

        for name in ("__getitem__", "__setitem__", "__delitem__", "__iter__", "__len__", "get"):
            method = getattr(dict, name)

            def watched(self: dict, *args: Any, _method: Any = method) -> Any:
                users.add(threading.current_thread().name)
                return _method(self, *args)

            setattr(WatchedDict, name, watched)
        for name in ("keys", "values", "items"):
            method = getattr(dict, name)

            def watched_view(self: dict, _method: Any = method) -> Any:
                users.add(threading.current_thread().name)
                return _method(self)

            setattr(WatchedDict, name, watched_view)

        original = app.clients
        app.clients = WatchedDict()
        try:
            connection = await self.connect("watched")
            await self.read_ticks(connection, 3)
            connection.close()
            await self.wait_until(lambda: not app.clients)
        finally:
            app.clients = original
        assert users == {threading.current_thread().name}

    @gen_test
    async def test_same_id_takeover(self) -> None:
        """A second connection with an Id in use replaces the first, which is told why."""
        first = await self.connect("shared")
        await self.read_ticks(first, 1)
        second = await self.connect("shared")
        while await first.read_message() is not None:
            pass
        assert first.close_code == app.CLOSE_REPLACED
        assert "same Id" in (first.close_reason or "")
        # The first connection's on_close has run by now; the newer entry must survive it.
        await self.wait_until(lambda: app.stats.closed["replaced"] == 1)
        assert app.clients["shared"]["object"] is not None
        ticks_before = app.stats.ticks_sent
        await self.read_ticks(second, 3)
        assert list(app.clients) == ["shared"]
        assert app.stats.ticks_sent > ticks_before

    @gen_test
    async def test_missing_id_refused_before_handshake(self) -> None:
        """No Id, or an empty one, gets HTTP 400 naming the Id argument, and no traceback."""
        for query in ("", "?Id=", "?id=lowercase"):
            with pytest.raises(HTTPClientError) as refused:
                await websocket_connect(f"ws://127.0.0.1:{self.get_http_port()}/websocket{query}")
            assert refused.value.code == 400
            assert refused.value.response is not None
            body = refused.value.response.body.decode()
            assert "Missing Id query argument" in body
        assert not app.clients
        assert app.stats.refused["missing_id"] == 3

    @gen_test
    async def test_log_cannot_be_forged(self) -> None:
        """What a client sends goes to the log, escaped so a newline cannot start a new line."""
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout), self.assertLogs("app", logging.INFO) as captured:
            connection = await self.connect("id with ✓")
            connection.write_message("hello\n[E 261124 00:00:00 app:1] forged")
            await self.wait_until(lambda: app.stats.messages_received == 1)
        assert stdout.getvalue() == ""
        messages = [record.getMessage() for record in captured.records]
        logged = [message for message in messages if "hello" in message]
        assert len(logged) == 1
        assert "\n" not in logged[0] and "\\n" in logged[0]
        assert "'id with ✓'" in logged[0]


class TestSchedule(ServerTestCase):
    @gen_test(timeout=10)
    async def test_ticks_on_the_turn_without_drift(self) -> None:
        """Every tick is taken just after a whole multiple of the interval, none missing."""
        connection = await self.connect("timing")
        ticks = await self.read_ticks(connection, 40)
        placed = [boundary_index(text, self.interval) for text in ticks]
        indexes = [index for index, _ in placed]
        assert indexes == list(range(indexes[0], indexes[0] + len(ticks)))
        late = [round(offset * 1000, 2) for _, offset in placed]
        # A drifting or unaligned schedule lands anywhere in the interval.
        assert max(late) < self.interval * 1000 / 4, late


class TestSendFrame(ServerTestCase):
    """``send_frame`` reaches below Tornado's public API: if Tornado changes there, fail here."""

    interval = 3600.0  # the test writes its own frames; a tick would only get in the way

    async def next_message(self, connection: Any) -> Any:
        """The next message that is not one of the SendThread's ticks (one an hour)."""
        while True:
            message = await self.read(connection)
            with contextlib.suppress(TypeError, ValueError):
                datetime.datetime.fromisoformat(message)
                continue
            return message

    @gen_test
    async def test_tornado_internals(self) -> None:
        """What the tick's loop reads of Tornado's objects is there and means what it expects."""
        reader = await self.connect("a")
        handler = app.clients["a"]["object"]
        connection, stream, sock = app.targets.by_id["a"]
        assert (connection, stream, sock) == (
            handler.ws_connection,
            connection.stream,
            stream.socket,
        )
        assert type(stream) is tornado.iostream.IOStream  # plain TCP: send() on its socket is right
        assert list(inspect.signature(stream.write).parameters) == ["data"]

        def pending() -> bool:
            # As Targets.write_to_each reads it; writing() is Tornado's public spelling.
            assert (stream._total_write_index != stream._total_write_done_index) is stream.writing()
            return stream.writing()

        assert not pending()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        assert fastpath.syscall_write(stream, sock, fastpath.encode_text_frame("ü" * 600_000))
        assert pending()  # the rest of the frame is queued in the stream
        assert await self.next_message(reader) == "ü" * 600_000
        await self.wait_until(lambda: not pending(), message="the stream drained")
        assert connection.server_terminated is False
        handler.close(1000)
        assert connection.server_terminated is True  # set as the close frame goes out
        await self.wait_until(lambda: not app.clients)
        with pytest.raises(OSError):
            sock.send(b"x")  # the socket kept in targets refuses a send once closed

    @gen_test
    async def test_frames_read_back(self) -> None:
        """Frames of every length encoding, written by syscall_write, arrive as the same text."""
        connection = await self.connect("a")
        _, stream, sock = app.targets.by_id["a"]
        # 7-bit, 16-bit and 64-bit lengths; the last is more than one write can usually take.
        for text in ["", "é" * 62, "x" * 126, "時" * 30_000, "ü" * 600_000]:
            assert fastpath.syscall_write(stream, sock, fastpath.encode_text_frame(text))
            assert await self.next_message(connection) == text


class FakeLoop:
    """Stands in for the IOLoop: records what the thread hands over, and when."""

    def __init__(self, pause_on_call: int, pause: float) -> None:
        self.calls: list[tuple[float, Any, tuple]] = []
        self.pause_on_call = pause_on_call
        self.pause = pause

    def add_callback(self, callback: Any, *args: Any) -> None:
        self.calls.append((time.time(), callback, args))
        if len(self.calls) == self.pause_on_call:
            time.sleep(self.pause)  # the thread stalls, as if the machine were suspended


def test_late_tick_skipped() -> None:
    """After a stall of several intervals the thread sends the current time once, then resumes."""
    interval = TICK
    loop = FakeLoop(pause_on_call=2, pause=3.5 * interval)
    thread = app.SendThread(loop, interval)  # type: ignore[arg-type]
    thread.start()
    deadline = time.monotonic() + 5
    while sum(1 for call in loop.calls if call[1] is app.send_to_all) < 6:
        assert time.monotonic() < deadline
        time.sleep(5 * MS)
    thread.stop()
    thread.join()
    sends = [(at, args[0]) for at, callback, args in loop.calls if callback is app.send_to_all]
    late = [args[0] for _, callback, args in loop.calls if callback is app.count_late_ticks]
    # The stall began just after tick 1 and ended halfway through tick 4: ticks 2 and 3 are
    # dropped, tick 4 goes out late with the time of that moment.
    assert late == [2]
    indexes = [boundary_index(text, interval)[0] for _, text in sends]
    steps = [b - a for a, b in zip(indexes, indexes[1:])]
    assert steps == [1, 3, 1, 1, 1][: len(steps)], steps
    times = [at for at, _ in sends]
    assert min(b - a for a, b in zip(times, times[1:])) > interval / 4


def test_clock_set_back() -> None:
    """Setting the clock back an hour does not stop the ticks for an hour."""
    interval = TICK
    set_back = [0.0]
    loop = FakeLoop(pause_on_call=0, pause=0)
    thread = app.SendThread(loop, interval)  # type: ignore[arg-type]
    thread.clock = lambda: time.time() - set_back[0]
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while len(loop.calls) < 3:
            assert time.monotonic() < deadline
            time.sleep(5 * MS)
        set_back[0] = 3600.0
        calls_before = len(loop.calls)
        while len(loop.calls) < calls_before + 3:
            assert time.monotonic() < deadline, "no tick since the clock was set back"
            time.sleep(5 * MS)
    finally:
        thread.stop()
        thread.join()


def test_thread_stops_promptly() -> None:
    """stop() ends the thread within a moment, even with a long interval."""
    thread = app.SendThread(FakeLoop(0, 0), interval=60)  # type: ignore[arg-type]
    thread.start()
    started = time.monotonic()
    thread.stop()
    thread.join(timeout=2)
    assert not thread.is_alive()
    assert time.monotonic() - started < 1


async def churn(port: int, count: int, concurrency: int, seconds: float) -> int:
    """Open and drop WebSocket connections as fast as the server allows; return how many."""
    request = (
        "GET /websocket?Id={id} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    done = 0
    deadline = time.monotonic() + seconds

    async def worker(worker_id: int) -> None:
        nonlocal done
        n = 0
        while done < count and time.monotonic() < deadline:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            # Every worker reuses a handful of Ids, so takeovers happen too.
            writer.write(request.format(id=f"churn{worker_id}-{n % 3}").encode())
            await reader.readuntil(b"\r\n\r\n")
            if n % 2:
                writer.write(b"\x88\x82abcd" + bytes(x ^ y for x, y in zip(b"\x03\xe8", b"ab")))
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            done += 1
            n += 1

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return done


def test_churn(start_server: Any) -> None:
    """Thousands of connects and disconnects leave a long-lived client with every tick."""
    interval = 50 * MS
    server = start_server(f"--interval={interval}", "--max_clients=1000")

    async def scenario() -> tuple[list[str], int, float]:
        steady = await websocket_connect(server.ws_url("steady"))
        await steady.read_message()  # the first tick may be partial; count from the next
        started = time.monotonic()
        churned = asyncio.ensure_future(churn(server.port, 4000, 16, seconds=4.0))
        ticks = []
        while not churned.done():
            ticks.append(await steady.read_message())
        ticks += [await steady.read_message() for _ in range(3)]
        await hang_up(steady)
        return ticks, churned.result(), time.monotonic() - started

    ticks, churned, elapsed = asyncio.run(scenario())
    print(f"{churned} connections in {elapsed:.2f} s: {churned / elapsed:.0f}/s")
    assert churned >= 1000
    indexes = [boundary_index(text, interval)[0] for text in ticks]
    assert indexes == list(range(indexes[0], indexes[0] + len(indexes)))
    for bad in ("Traceback", "Task exception", "[E ", "RuntimeError"):
        assert bad not in server.log
    assert server.stop() == 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_server(start_server: Any, signum: int) -> None:
    """Ctrl-C, or SIGTERM without a drain: every client gets 1001 Going Away and the process
    exits 0, quietly. (SIGTERM's drain has tests/test_drain.py.)"""
    # serve() installs its handlers before it logs "Listening", which start_server waits for.
    server = start_server(f"--interval={TICK}", "--drain_seconds=0")

    async def scenario() -> list[tuple[int | None, str | None]]:
        connections = [await websocket_connect(server.ws_url(f"c{n}")) for n in range(3)]
        for connection in connections:
            await asyncio.wait_for(connection.read_message(), TIMEOUT)
        server.process.send_signal(signum)
        for connection in connections:
            while await asyncio.wait_for(connection.read_message(), 5 * TIMEOUT) is not None:
                pass
            connection.close()
        return [(c.close_code, c.close_reason) for c in connections]

    closes = asyncio.run(scenario())
    assert server.process.wait(5 * TIMEOUT) == 0
    assert closes == [(app.CLOSE_GOING_AWAY, "Server shutting down")] * 3
    assert "Traceback" not in server.log and "KeyboardInterrupt" not in server.log
    assert "Shutting down" in server.log
