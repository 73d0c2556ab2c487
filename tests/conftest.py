from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from chromium import CHROMIUM, CHROMIUM_ARGS
from clients import Reader
from nginx_process import NginxProcess, nginx_missing, self_signed_certificate
from prometheus_process import PrometheusProcess, prometheus_missing, promtool_problems
from redis_process import RedisProcess, redis_missing
from servers import ServerProcess
from support import on_ci


@pytest.fixture(autouse=True, scope="session")
def ctrl_c_reaches_children() -> Iterator[None]:
    """Start every child with SIGINT at its default, as a terminal starts the program it runs.

    A script's ``pytest &`` (two suites side by side) starts the run with SIGINT ignored, and
    each child inherits that: a server that leaves SIGINT to Python, as docs/minimal.py does,
    would then ignore the SIGINT a test sends it for Ctrl-C.
    """
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # SIG_DFL in a child
    yield
    if ignored:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


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


# The browser fixtures: a test module that uses them calls chromium.need_chromium() first.


class Console:
    """Errors a page logged, and the patterns of those a test expects."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.expected: list[re.Pattern[str]] = []

    def expect(self, pattern: str) -> None:
        self.expected.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.expected)]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium, one for each test module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def new_page(
    browser: Any, console: Console, start_server: Callable[..., ServerProcess]
) -> Iterator[Callable[..., Any]]:
    """Open pages, each in a fresh context (its own cookies and sessionStorage), watching for
    errors; ``new_page(tab_of=page)`` opens another tab in ``page``'s context instead."""
    # Depending on start_server makes the pages close before the servers are killed.
    contexts = []

    def on_console(message: Any) -> None:
        if message.type == "error":
            console.errors.append(f"console: {message.text}")

    def new_page(tab_of: Any = None, **context_options: Any) -> Any:
        if tab_of is None:
            context = browser.new_context(**context_options)
            contexts.append(context)
        else:
            context = tab_of.context
        page = context.new_page()
        page.on("console", on_console)
        page.on("pageerror", lambda error: console.errors.append(f"pageerror: {error}"))
        return page

    yield new_page
    for context in contexts:
        context.close()
    assert not console.unexpected(), "errors in the browser console"


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


def require_prometheus() -> None:
    """Skip the test without promtool and prometheus (saying how to install them), but fail
    on CI."""
    missing = prometheus_missing()
    if missing:
        if on_ci():
            pytest.fail(f"the monitoring tests cannot run on CI: {missing}", pytrace=False)
        pytest.skip(missing)


@pytest.fixture
def promtool() -> Callable[[str], str]:
    """``promtool check metrics`` on an exposition: what it finds wrong (empty when nothing).

    Without it the test is skipped with how to install it, and fails on CI.
    """
    require_prometheus()
    return promtool_problems


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Callable[[list[str]], PrometheusProcess]]:
    """Start a Prometheus server scraping the targets given (host:port); stopped afterwards.

    Without it the test is skipped with how to install it, and fails on CI.
    """
    require_prometheus()
    started: list[PrometheusProcess] = []

    def start(targets: list[str]) -> PrometheusProcess:
        directory = tmp_path / f"prometheus{len(started)}"
        directory.mkdir()
        prometheus = PrometheusProcess(directory, targets)
        started.append(prometheus)
        return prometheus

    yield start
    for prometheus in started:
        prometheus.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of the test's own; skipped without one, except in CI."""
    missing = redis_missing()
    if missing:
        if on_ci():
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
