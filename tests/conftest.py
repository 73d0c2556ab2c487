from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest
from support import NginxProcess, ServerProcess, nginx_missing, on_ci, self_signed_certificate


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


def require_nginx() -> None:
    """Skip the test without nginx (saying how to install it), but fail on CI."""
    missing = nginx_missing()
    if missing:
        if on_ci():
            pytest.fail(f"the proxy tests cannot run on CI: {missing}", pytrace=False)
        pytest.skip(missing)


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key."""
    require_nginx()
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def start_nginx(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[str], NginxProcess]]:
    """Start nginx processes, each serving a site config; any still running are stopped after.

    Without nginx the test is skipped with how to install it, and fails on CI.
    """
    require_nginx()
    started: list[NginxProcess] = []

    def start(site: str) -> NginxProcess:
        nginx = NginxProcess(site, tmp_path_factory.mktemp("nginx"))
        started.append(nginx)
        return nginx

    yield start
    for nginx in started:
        nginx.close()
