from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest
from support import Reader, RedisProcess, ServerProcess, ci, redis_missing


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerProcess]]:
    """Start ``python app.py`` processes; any still running are killed afterwards."""
    started: list[ServerProcess] = []

    def start(*args: str, **kwargs) -> ServerProcess:
        server = ServerProcess(*args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of the test's own; skipped without one, except in CI."""
    missing = redis_missing()
    if missing:
        if ci():
            pytest.fail(f"cluster tests cannot run on CI: {missing}", pytrace=False)
        pytest.skip(missing)
    server = RedisProcess(tmp_path)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def close_readers() -> Iterator[None]:
    """Drop the sockets of background readers that a test which failed half-way left open."""
    yield
    Reader.abandon_all()
