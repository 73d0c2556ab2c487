"""docs/minimal.py, the walkthrough's step one, run as a real process: it does what it says."""

from __future__ import annotations

import asyncio
import signal
import statistics
import subprocess
import sys
from typing import Any

import pytest
from support import MS, ROOT, TIMEOUT, boundary_index, free_port, gaps, hang_up
from tornado.httpclient import HTTPClientError
from tornado.websocket import websocket_connect

INTERVAL = 100 * MS


@pytest.fixture
def minimal(start_server: Any) -> Any:
    """``python docs/minimal.py`` ticking every INTERVAL on a free port."""
    return start_server(f"--interval={INTERVAL}", script="docs/minimal.py", port=free_port())


async def read(connection: Any) -> Any:
    return await asyncio.wait_for(connection.read_message(), TIMEOUT)


def test_ticks(minimal: Any) -> None:
    """Two clients get the same ticks, one at each turn of the interval, none missing."""

    async def scenario() -> tuple[list[str], list[str]]:
        first = await websocket_connect(minimal.ws_url("first"))
        second = await websocket_connect(minimal.ws_url("second"))
        ticks = [await read(first) for _ in range(8)], [await read(second) for _ in range(8)]
        await hang_up(first)
        await hang_up(second)
        return ticks

    first, second = asyncio.run(scenario())
    # The second joined a little later: from then on, both got the very same texts.
    assert [t for t in second if t <= first[-1]] == [t for t in first if t >= second[0]]
    for ticks in (first, second):
        placed = [boundary_index(text, INTERVAL) for text in ticks]
        assert gaps([index for index, _ in placed]) == [], ticks
        # On the turn: most ticks within a few milliseconds of it, even on a busy machine.
        assert statistics.median(offset for _, offset in placed) < INTERVAL / 4, ticks


def test_missing_id(minimal: Any) -> None:
    """A connection without an Id is refused with 400 before the handshake."""

    async def scenario() -> int:
        with pytest.raises(HTTPClientError) as caught:
            await websocket_connect(minimal.ws_url(None))
        return caught.value.code

    assert asyncio.run(scenario()) == 400
    minimal.wait_for_log(r"400 GET /websocket .*Missing argument Id")


def test_same_id(minimal: Any) -> None:
    """When an older connection with the same Id leaves, the newer one keeps its ticks."""

    async def scenario() -> Any:
        older = await websocket_connect(minimal.ws_url("kitchen"))
        await read(older)
        newer = await websocket_connect(minimal.ws_url("kitchen"))
        await read(newer)
        await hang_up(older)
        await asyncio.sleep(3 * INTERVAL)  # time for the older one's on_close to run
        ticks = [await read(newer) for _ in range(3)]
        await hang_up(newer)
        return ticks

    assert None not in asyncio.run(scenario())


def test_ctrl_c(minimal: Any) -> None:
    """Ctrl-C ends the process at once and quietly: the daemon SendThread does not hold it."""

    async def scenario() -> None:
        connection = await websocket_connect(minimal.ws_url("a"))
        await connection.write_message("line one\nline two")
        await read(connection)
        await hang_up(connection)

    asyncio.run(scenario())
    minimal.wait_for_log(r"Message from 'a': 'line one\\nline two'")
    assert minimal.stop(signal.SIGINT) == 0
    assert "Traceback" not in minimal.log


def test_ctrl_c_in_a_background_run() -> None:
    """test_ctrl_c passes in a run started as a script's ``pytest &``, with SIGINT ignored."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # only for the run to inherit
    try:
        run = subprocess.Popen(
            [*command, f"{__file__}::test_ctrl_c"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    with run:
        try:
            output, _ = run.communicate(timeout=10 * TIMEOUT)
        except subprocess.TimeoutExpired:
            run.kill()
            raise
    assert run.returncode == 0, output
