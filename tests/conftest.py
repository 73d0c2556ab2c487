from __future__ import annotations

from collections.abc import Iterator
from typing import Callable

import pytest
from support import ServerProcess


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
