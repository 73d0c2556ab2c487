"""The answers to the tutorial's exercises, docs/answers/*.py, run as real processes: each
does what its part says it does."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
import unittest
from typing import Any
from unittest import mock

import pytest
from support import MS, ROOT, TIMEOUT, boundary_index, free_port, gaps, hang_up
from tornado.httpclient import HTTPClientError
from tornado.websocket import websocket_connect

INTERVAL = 10 * MS
SECONDS = 100 * INTERVAL  # twice the pause that churn.py takes for ticks that stopped
ANSWERS = ROOT / "docs" / "answers"


def churn(port: int) -> subprocess.CompletedProcess[str]:
    """``python docs/churn.py`` against the server on ``port``: its output and exit status."""
    return subprocess.run(
        [
            sys.executable,
            "docs/churn.py",
            f"--port={port}",
            f"--interval={INTERVAL}",
            f"--seconds={SECONDS}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=SECONDS + 5 * TIMEOUT,
    )


@pytest.fixture
def serve(start_server: Any) -> Any:
    """Start an answer, ticking every INTERVAL on a free port."""
    return lambda script, *args: start_server(
        f"--interval={INTERVAL}", *args, script=script, port=free_port()
    )


async def read(connection: Any) -> Any:
    return await asyncio.wait_for(connection.read_message(), TIMEOUT)


def read_ticks(server: Any, count: int) -> list[str]:
    """Connect, read ``count`` ticks, hang up."""

    async def scenario() -> list[str]:
        connection = await websocket_connect(server.ws_url("reader"))
        ticks = [await read(connection) for _ in range(count)]
        await hang_up(connection)
        return ticks

    return asyncio.run(scenario())


def test_every_answer_is_run() -> None:
    """Each file in docs/answers/ is named by a test here, so that none goes stale unseen."""
    source = (ROOT / "tests" / "test_answers.py").read_text(encoding="utf-8")
    for path in sorted(ANSWERS.glob("*.py")):
        assert f"docs/answers/{path.name}" in source, f"no test runs {path.name}"


# Part 1


def test_part1_lock(serve: Any) -> None:
    """A lock around ``clients`` does not make the SendThread's writes safe: it dies at its
    first write, as docs/unsafe.py's does, and no tick arrives."""
    server = serve("docs/answers/part1_lock.py")
    watched = churn(server.port)
    assert watched.returncode == 1, watched.stdout + watched.stderr
    assert "NO TICK ARRIVED" in watched.stdout
    assert server.stop(signal.SIGINT) == 0
    assert "RuntimeError: There is no current event loop in thread" in server.log


def test_part1_coroutine(serve: Any) -> None:
    """A coroutine on the loop ticks at every turn of the interval, none missing, and keeps
    ticking through churn."""
    server = serve("docs/answers/part1_coroutine.py")
    placed = [boundary_index(text, INTERVAL) for text in read_ticks(server, 20)]
    assert gaps([index for index, _ in placed]) == [], placed
    watched = churn(server.port)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert server.stop(signal.SIGINT) == 0
    assert "Traceback" not in server.log


def test_part1_stdin() -> None:
    """Each line typed into the server's terminal reaches every client, in order."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "docs/answers/part1_stdin.py", f"--port={port}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdin is not None and process.stdout is not None
    listening = threading.Event()
    log: list[str] = []

    def collect() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            log.append(line)
            if re.search(r"Listening on http://", line):
                listening.set()

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    try:
        assert listening.wait(5 * TIMEOUT), "".join(log)

        async def scenario() -> list[list[str]]:
            url = f"ws://127.0.0.1:{port}/websocket?Id="
            clients = [await websocket_connect(url + name) for name in ("a", "b")]
            await asyncio.sleep(50 * MS)  # both are in clients before the first line
            assert process.stdin is not None
            process.stdin.write("hello\nthe second line\n")
            process.stdin.flush()
            got = []
            for client in clients:  # one loop at a time: Python 3.9 has no await in a nested one
                got.append([await read(client) for _ in range(2)])
            for client in clients:
                await hang_up(client)
            return got

        assert asyncio.run(scenario()) == [["hello", "the second line"]] * 2
        process.send_signal(signal.SIGINT)
        assert process.wait(5 * TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        reader.join(5)
        process.stdin.close()
        process.stdout.close()
    assert "Traceback" not in "".join(log)


# Part 2


def test_part2_refuse(serve: Any) -> None:
    """A second connection with an Id in use is refused with 409 before the handshake; the
    first keeps its ticks."""
    server = serve("docs/answers/part2_refuse.py")

    async def scenario() -> tuple[int, list[str]]:
        first = await websocket_connect(server.ws_url("kitchen"))
        await read(first)
        with pytest.raises(HTTPClientError) as refused:
            await websocket_connect(server.ws_url("kitchen"))
        ticks = [await read(first) for _ in range(3)]
        await hang_up(first)
        return refused.value.code, ticks

    code, ticks = asyncio.run(scenario())
    assert code == 409
    assert None not in ticks
    assert server.stop(signal.SIGINT) == 0
    assert "Traceback" not in server.log


def test_part2_direct() -> None:
    """With the hand-over taken out of app.py's SendThread, test_writes_on_loop_thread fails
    and test_thread_never_touches_clients still passes, as Part 2's exercise says."""
    import test_server

    import app

    spec = importlib.util.spec_from_file_location(
        "part2_direct", ROOT / "docs/answers/part2_direct.py"
    )
    assert spec is not None and spec.loader is not None
    answer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(answer)

    class Direct(test_server.TestPush):  # defined here, so that pytest does not collect it
        def setUp(self) -> None:
            patcher = mock.patch.object(app, "SendThread", answer.DirectSendThread)
            patcher.start()
            self.addCleanup(patcher.stop)
            super().setUp()

    result = unittest.TestResult()
    for name in ("test_writes_on_loop_thread", "test_thread_never_touches_clients"):
        Direct(name).run(result)
    failed = {test._testMethodName for test, _ in result.failures + result.errors}
    assert result.testsRun == 2
    assert failed == {"test_writes_on_loop_thread"}, result.failures + result.errors


def test_part2_echo(serve: Any) -> None:
    """A message comes back to its sender only, between the ticks."""
    server = serve("docs/answers/part2_echo.py")

    async def scenario() -> tuple[list[str], list[str]]:
        sender = await websocket_connect(server.ws_url("sender"))
        other = await websocket_connect(server.ws_url("other"))
        await sender.write_message("hello\nthere")
        got = [await read(sender)]
        while got[-1] != "hello\nthere" and len(got) < 50:
            got.append(await read(sender))
        seen = [await read(other) for _ in range(5)]
        await hang_up(sender)
        await hang_up(other)
        return got, seen

    got, seen = asyncio.run(scenario())
    assert got[-1] == "hello\nthere"
    assert "hello\nthere" not in seen
    assert server.stop(signal.SIGINT) == 0
    assert "Traceback" not in server.log
