"""Behind nginx: the shipped deploy/nginx.conf with TLS, the origin check, client addresses,
and the layout docs/deploy.md sets up: two processes of the systemd unit sharing one Redis.

The nginx tests run Debian's nginx with deploy/nginx.conf itself: only the lines it marks
"# CHANGE" are filled in (ports, upstreams, the certificate), by ``nginx_process.fill_site``.
The app processes of that layout get the options of deploy/tornado-time-push.service and the
variables of deploy/tornado-time-push.env, expanded as systemd does, by ``unit_options`` below.
A rolling restart of that layout, with a page and a few hundred clients, is measured by
``rolling.RollingRestart``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import json
import re
import shlex
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, Callable, ClassVar

import pytest
from chromium import CHROMIUM, CHROMIUM_ARGS, need_chromium
from clients import Reader, closing
from nginx_process import CHANGE, NginxProcess, fill_site
from redis_process import RedisProcess
from rolling import RollingRestart
from servers import ServerProcess, ServerTestCase
from support import MS, TIMEOUT, free_port, hang_up
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.options import options
from tornado.testing import gen_test
from tornado.websocket import WebSocketClientConnection, websocket_connect

import app
from timepush import drain as app_drain
from timepush import hosts

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "deploy" / "nginx.conf"
UNIT = ROOT / "deploy" / "tornado-time-push.service"
ENV_FILE = ROOT / "deploy" / "tornado-time-push.env"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
TOKEN = "proxy-token-41b7"

# What the shipped file says that only fits the example site, never this machine.
EXAMPLE_VALUES = ("time.example.com", "/etc/letsencrypt", "127.0.0.1:8888", "127.0.0.1:8889")

# nginx's own WebSocket proxying example: the upgrade headers, and no Host line.
MINIMAL_SITE = """
server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {certificate};
    ssl_certificate_key {key};
    location / {{
        proxy_pass http://127.0.0.1:{upstream};
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection "upgrade";
    }}
}}
"""

# The client's own address, kept apart from the one nginx uses for the app (127.0.0.1).
CLIENT_IP = "127.0.0.2"
FORGED = {"X-Real-IP": "203.0.113.7", "X-Forwarded-For": "203.0.113.8"}


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a client coroutine to its end, within a bound, on a thread of its own.

    Playwright's synchronous API keeps an event loop running on the test's thread.
    """
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, asyncio.wait_for(coroutine, 10 * TIMEOUT)).result()


async def ws_connect(
    url: str, headers: dict[str, str] | None = None, source: str | None = None
) -> WebSocketClientConnection:
    """Open a WebSocket, over TLS with the test's self-signed certificate if wss."""
    request = HTTPRequest(url, headers=headers, validate_cert=False, network_interface=source)
    return await websocket_connect(request)


@pytest.fixture
def front(
    start_nginx: Callable[[str], NginxProcess], certificate: tuple[Path, Path]
) -> Callable[..., int]:
    """Put nginx with the shipped config in front of app processes; return its https port."""

    def start(*servers: ServerProcess) -> int:
        port = free_port()
        site = fill_site(
            SITE.read_text(),
            http_port=free_port(),
            https_port=port,
            certificate=certificate,
            upstreams=[server.port for server in servers],
        )
        start_nginx(site)
        return port

    return start


def test_site_fill() -> None:
    """Every value in deploy/nginx.conf that fits only the example site is on a CHANGE line."""
    text = SITE.read_text()
    assert {m["name"] for m in CHANGE.finditer(text)} == {
        "listen",
        "server_name",
        "ssl_certificate",
        "ssl_certificate_key",
        "server",
    }
    filled = fill_site(
        text, http_port=1, https_port=2, certificate=(Path("c"), Path("k")), upstreams=[3]
    )
    directives = re.sub(r"#.*", "", filled)
    left = [value for value in EXAMPLE_VALUES if value in directives]
    assert left == [], "values for the example site outside a CHANGE line"
    assert CHANGE.search(filled) is None
    unmarked = [line for line in text.splitlines() if not CHANGE.fullmatch(line)]
    assert [line for line in unmarked if line not in filled.splitlines()] == []


@pytest.fixture
def tls_context() -> Iterator[Any]:
    """A headless Chromium context that takes the test's self-signed certificate.

    One for each test, not conftest's browser for the module: while it runs, Playwright holds an
    event loop on the test's thread, and the other tests here run loops of their own.
    """
    need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(ignore_https_errors=True)
        yield context
        context.close()
        browser.close()


def test_page_over_wss(tls_context, start_server, front) -> None:
    """The page loaded through nginx over https connects over wss and ticks."""
    from playwright.sync_api import expect

    server = start_server("--interval=0.05")
    port = front(server)
    page = tls_context.new_page()
    sockets: list[str] = []
    page.on("websocket", lambda socket: sockets.append(socket.url))
    page.goto(f"https://127.0.0.1:{port}/?Id=secure")
    expect(page.get_by_role("status")).to_have_text("Connected")
    raw = page.locator("#clock-raw")
    expect(raw).to_have_text(re.compile(r"^\d{4}-"))
    expect(raw).not_to_have_text(raw.text_content())
    page.close()
    assert sockets == [f"wss://127.0.0.1:{port}/websocket?Id=secure"]
    server.wait_for_log(r"Client 'secure' connected")


def test_http_redirects(start_server, start_nginx, certificate) -> None:
    """Plain http through the shipped config is sent to https, path and query kept."""
    server = start_server()
    http_port = free_port()
    start_nginx(
        fill_site(
            SITE.read_text(),
            http_port=http_port,
            https_port=free_port(),
            certificate=certificate,
            upstreams=[server.port],
        )
    )
    connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5 * TIMEOUT)
    try:
        connection.request("GET", "/?Id=plain", headers={"Host": "localhost"})
        response = connection.getresponse()
    finally:
        connection.close()
    assert (response.status, response.getheader("Location")) == (301, "https://localhost/?Id=plain")


@pytest.mark.parametrize(("args", "seen"), [(["--xheaders"], CLIENT_IP), ([], "127.0.0.1")])
def test_client_address(args, seen, start_server, front) -> None:
    """Through nginx the app logs the client's address with --xheaders, the proxy's without."""
    server = start_server("--interval=0.02", *args)
    port = front(server)

    async def visit() -> None:
        # Forged headers too: nginx replaces X-Real-IP, which Tornado prefers.
        url = f"wss://127.0.0.1:{port}/websocket?Id=far"
        connection = await ws_connect(url, headers=FORGED, source=CLIENT_IP)
        assert await connection.read_message() is not None
        await hang_up(connection)

    run(visit())
    found = server.wait_for_log(r"101 GET /websocket\?Id=far \(([^)]*)\)")
    assert found.group(1) == seen


@pytest.mark.parametrize(
    ("args", "forged", "seen"),
    [
        ([], {"X-Real-IP": "203.0.113.7"}, "127.0.0.1"),
        ([], {"X-Forwarded-For": "203.0.113.7"}, "127.0.0.1"),
        ([], {"X-Real-IP": "203.0.113.7", "X-Forwarded-For": "203.0.113.8"}, "127.0.0.1"),
        # Why --xheaders is for a port only the proxy can reach: a direct client is believed.
        (["--xheaders"], {"X-Real-IP": "203.0.113.7"}, "203.0.113.7"),
    ],
)
def test_forged_address(args, forged, seen, start_server) -> None:
    """Without --xheaders, a direct client's forged X-Real-IP or X-Forwarded-For is ignored."""
    server = start_server(*args)

    async def visit() -> None:
        client = AsyncHTTPClient(force_instance=True)
        try:
            await client.fetch(server.url + "/stats", headers=forged)
        finally:
            client.close()

    run(visit())
    assert server.wait_for_log(r"200 GET /stats \(([^)]*)\)").group(1) == seen


def minimal_front(server, port: int, start_nginx, certificate) -> Any:
    """Put nginx's minimal WebSocket example on ``port`` in front of ``server``; return it."""
    site = MINIMAL_SITE.format(
        port=port, certificate=certificate[0], key=certificate[1], upstream=server.port
    )
    start_nginx(site)
    return server


def test_minimal_example(tls_context, start_server, start_nginx, certificate) -> None:
    """Behind nginx's minimal example the 403's first log line names Origin, Host and the fix."""
    from playwright.sync_api import expect

    port = free_port()
    server = minimal_front(start_server(), port, start_nginx, certificate)
    page = tls_context.new_page()
    page.goto(f"https://127.0.0.1:{port}/?Id=minimal&backoff=5")
    expect(page.get_by_role("status")).to_contain_text("1006 could not connect")
    page.close()
    warning = server.wait_for_log(r"\[W [^\n]*")[0]
    assert f"origin {f'https://127.0.0.1:{port}'!r}" in warning
    assert f"Host {f'127.0.0.1:{server.port}'!r}" in warning
    assert "proxy_set_header Host $http_host;" in warning
    assert "--allowed_origins" in warning
    assert server.stats()["refused"] == {"origin": 1}

    async def visit() -> None:
        with pytest.raises(HTTPClientError) as refused:
            await ws_connect(
                f"wss://127.0.0.1:{port}/websocket?Id=minimal",
                headers={"Origin": f"https://127.0.0.1:{port}"},
            )
        assert (refused.value.code, refused.value.message) == (403, hosts.ORIGIN_REFUSED)

    run(visit())


def test_minimal_example_allowed(tls_context, start_server, start_nginx, certificate) -> None:
    """Behind nginx's minimal example, --allowed_origins=(the proxy's origin) lets the page in."""
    from playwright.sync_api import expect

    port = free_port()
    server = start_server(f"--allowed_origins=https://127.0.0.1:{port}", "--interval=0.05")
    minimal_front(server, port, start_nginx, certificate)
    page = tls_context.new_page()
    page.goto(f"https://127.0.0.1:{port}/?Id=allowed")
    expect(page.get_by_role("status")).to_have_text("Connected")
    page.close()
    server.wait_for_log(r"Client 'allowed' connected")


def test_spread(start_server, front) -> None:
    """With two app processes upstream, clients spread over both; a reused Id finds its first."""
    servers = [start_server("--interval=0.02") for _ in range(2)]
    port = front(*servers)
    count = 16

    async def visit() -> int | None:
        connections = [
            await ws_connect(f"wss://127.0.0.1:{port}/websocket?Id=c{n}") for n in range(count)
        ]
        for connection in connections:
            assert await connection.read_message() is not None
        shares = [server.stats()["clients"] for server in servers]
        assert sum(shares) == count and min(shares) > 0, shares
        # The same Id again reaches the process holding the first, which closes that one.
        again = await ws_connect(f"wss://127.0.0.1:{port}/websocket?Id=c0")
        while await connections[0].read_message() is not None:
            pass
        connections[0].close()  # closed already, but Tornado's client wants to be told
        for connection in [*connections[1:], again]:
            await hang_up(connection)
        return connections[0].close_code

    assert run(visit()) == app.CLOSE_REPLACED


def env_file() -> dict[str, str]:
    """The variables deploy/tornado-time-push.env sets, comments and blank lines left out."""
    lines = [line.strip() for line in ENV_FILE.read_text().splitlines()]
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
    return {name: value for name, value in pairs}


def unit_options(port: int, environment: dict[str, str]) -> list[str]:
    """The options the systemd unit passes to app.py for instance ``port``, expanded as
    systemd does: ``%i`` is the instance, and ``${NAME}`` within a word the variable's exact
    value, or nothing when it is unset."""
    (command,) = re.findall(r"^ExecStart=(.*)$", UNIT.read_text(), re.M)
    words = shlex.split(command.replace("%i", str(port)))
    assert words[1].endswith("app.py")
    return [re.sub(r"\$\{(\w+)\}", lambda m: environment.get(m[1], ""), word) for word in words[2:]]


def test_unit_options() -> None:
    """Every option the systemd unit passes to app.py is one app.py defines."""
    names = [word[2:].split("=")[0] for word in unit_options(8888, {})]
    assert {"xheaders", "redis"} <= set(names)
    assert [name for name in names if name not in options._options] == []


def test_unit_allows_the_drain() -> None:
    """systemd waits longer for the app to stop than the app takes to drain (its
    --drain_seconds, then a second for the last goodbyes) before it kills it."""
    (timeout,) = re.findall(r"^TimeoutStopSec=(\d+)s?$", UNIT.read_text(), re.M)
    given = [word for word in unit_options(8888, {}) if word.startswith("--drain_seconds=")]
    drain_seconds = float(given[-1].split("=")[1]) if given else options.drain_seconds
    assert drain_seconds > 0, "the unit restarts without a drain"
    assert int(timeout) >= 2 * drain_seconds + 5


def test_unit_environment() -> None:
    """The unit reads the file docs/deploy.md installs, and the example of that file sets
    every variable the unit uses and only variables that the unit or the app reads."""
    unit = UNIT.read_text()
    (path,) = re.findall(r"^EnvironmentFile=(\S+)$", unit, re.M)
    assert path.startswith("/") and f"{ENV_FILE.relative_to(ROOT)} {path}" in DEPLOY_DOC.read_text()
    (command,) = re.findall(r"^ExecStart=(.*)$", unit, re.M)
    assert "$" not in re.sub(r"\$\{\w+\}", "", command), "only ${NAME} keeps a value whole"
    used = set(re.findall(r"\$\{(\w+)\}", command))
    variables = env_file()
    assert used - set(variables) == set()
    sources = [p for p in [*ROOT.glob("*.py"), *ROOT.glob("*/*.py")] if p.parent.name != "tests"]
    read = {name for name in variables if any(f'"{name}"' in p.read_text() for p in sources)}
    assert set(variables) - used - read == set()
    assert {"PUSH_TOKEN", "COOKIE_SECRET"} <= read


async def push_through(port: int, body: dict[str, str]) -> tuple[int, Any]:
    """POST ``body`` to /push through nginx with the test's token; return the status and answer."""
    client = AsyncHTTPClient(force_instance=True)
    try:
        response = await client.fetch(
            f"https://127.0.0.1:{port}/push",
            method="POST",
            body=json.dumps(body),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            validate_cert=False,
            raise_error=False,
        )
    finally:
        client.close()
    return response.code, json.loads(response.body)


def test_deployed_push(redis_server: RedisProcess, start_server, front) -> None:
    """The layout docs/deploy.md sets up, two processes of the unit sharing Redis behind
    nginx: every push to an Id through nginx reaches it, whichever process nginx picks, and a
    push to all reaches the clients of both."""
    import redis

    from timepush import cluster

    count, pushes = 20, 6
    environment = {**env_file(), "REDIS_URL": redis_server.url, "PUSH_TOKEN": TOKEN}
    servers = [
        start_server(*unit_options(0, environment), f"--redis_interval={50 * MS}", env=environment)
        for _ in range(2)
    ]
    for server in servers:
        server.wait_for_log(r"Node \S+ joined the cluster")
    port = front(*servers)
    ids = [f"c{n}" for n in range(count)]

    def registered() -> bool:
        keys = [cluster.PREFIX + "id:" + client_id for client_id in ids]
        with redis.Redis.from_url(redis_server.url) as client:
            return client.exists(*keys) == count

    async def scenario() -> None:
        readers = {
            client_id: Reader(await ws_connect(f"wss://127.0.0.1:{port}/websocket?Id={client_id}"))
            for client_id in ids
        }
        shares = [server.stats()["clients"] for server in servers]
        assert sum(shares) == count and min(shares) > 0, shares
        # A claim reaches Redis a moment after its handshake; a push from the other process
        # before then finds nobody.
        for _ in range(round(5 * TIMEOUT / (10 * MS))):
            if registered():
                break
            await asyncio.sleep(10 * MS)
        assert registered(), "the clients' Ids never all reached Redis"

        texts = [f"to c7, {n}" for n in range(pushes)]
        for text in texts:
            assert await push_through(port, {"Id": "c7", "message": text}) == (200, {"reached": 1})
        await readers["c7"].wait_for(lambda r: all(text in r.messages for text in texts))
        assert await push_through(port, {"message": "to all"}) == (200, {"reached": count})
        for reader in readers.values():
            await reader.wait_for(lambda r: "to all" in r.messages)
        others = [m for i, r in readers.items() if i != "c7" for m in r.messages]
        assert not set(texts) & set(others)

    run(closing(scenario()))
    # nginx cannot route a push by the Id in its body: both processes answered some.
    for server in servers:
        server.wait_for_log(r"200 POST /push")
    assert TOKEN not in "".join(server.log for server in servers)


def test_rolling_restart(
    redis_server: RedisProcess, start_server, certificate, tls_context, tmp_path_factory
) -> None:
    """The layout of docs/deploy.md restarted a node at a time, as its "Deploying a new version"
    does: every client ends connected and held once, none misses more than a few ticks, each
    node's clients leave over its drain and come back spread out rather than in one burst, a
    page says the server restarts and comes back by itself, and nothing is logged at ERROR."""

    count, interval, drain, window = 200, 50 * MS, 1000 * MS, 200 * MS
    environment = {**env_file(), "REDIS_URL": redis_server.url}

    def start(port: int = 0) -> ServerProcess:
        return start_server(
            *unit_options(port, environment),
            f"--interval={interval}",
            f"--drain_seconds={drain}",
            f"--redis_interval={50 * MS}",
            env=environment,
        )

    nodes = [start() for _ in range(2)]
    port = free_port()
    site = fill_site(
        SITE.read_text(),
        http_port=free_port(),
        https_port=port,
        certificate=certificate,
        upstreams=[node.port for node in nodes],
    )
    # Each client holds two of nginx's connections, one on each side.
    nginx = NginxProcess(site, tmp_path_factory.mktemp("nginx"), connections=4 * count)
    try:
        scenario(nodes, port, start, tls_context, count, interval, drain, window)
    finally:
        nginx.close()


def scenario(nodes, port, start, tls_context, count, interval, drain, window) -> None:
    """test_rolling_restart, with nginx in front of ``nodes`` on ``port``."""
    from playwright.sync_api import expect

    page = tls_context.new_page()
    page.goto(f"https://127.0.0.1:{port}/?Id=page&restartWindow={window}&backoff={interval}")
    expect(page.get_by_role("status")).to_have_text("Connected")
    page.evaluate(
        """() => {
            const status = document.getElementById("status-text");
            window.statuses = [];
            new MutationObserver(() => window.statuses.push(status.textContent))
                .observe(status, { childList: true, characterData: true, subtree: true });
        }"""
    )
    rolling = RollingRestart(
        f"wss://127.0.0.1:{port}/websocket",
        nodes,
        start,
        count=count,
        window=window,
        interval=interval,
    )
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        scenario = asyncio.wait_for(rolling.run(drain_timeout=5 * TIMEOUT), 30 * TIMEOUT)
        pool.submit(asyncio.run, scenario).result()
    figures = rolling.figures()
    print(json.dumps(figures, indent=1))

    assert figures["connected_at_end"] == count
    assert figures["held_by_the_nodes"] == count + 1  # and the page
    assert figures["replaced"] == 0
    # A client moves once or twice, and misses at most the window's ticks each time, and a few.
    assert figures["ticks_missed"]["max"] <= 2 * window / interval + 12, figures["ticks_missed"]
    for restart in figures["restarts"]:
        closed = restart["closed"]
        assert restart["close_codes"] == {app_drain.CLOSE_SERVICE_RESTART: closed}, restart
        assert closed > count / 4, restart  # nginx's hash gave each node a share
        # Spread over the drain, not all in the same instant; the comebacks too.
        assert restart["closes_over_s"] > drain / 2, restart
        assert restart["closes_peak_per_100ms"] < closed / 2, restart
        assert restart["reconnects"] >= closed, restart
        assert restart["reconnects_peak_per_100ms"] < restart["reconnects"] / 2, restart

    expect(page.get_by_role("status")).to_have_text("Connected")
    statuses = page.evaluate("window.statuses")
    assert any(text.startswith("Server restarting, reconnecting in") for text in statuses)
    for node in [*rolling.old_nodes, *rolling.nodes]:
        assert "[E " not in node.log and "Traceback" not in node.log, node.log


BAD_HEADERS = [
    {"Origin": "https://" + "o" * 5000 + ".example"},
    {"Origin": "https://\u00e9'\"\\.example"},
    {"Origin": "https://a.example", "Host": "h" * 5000},
]


class TestOriginRefusal(ServerTestCase):
    """The refusal of a foreign origin, in process."""

    # Any Host, so that an odd one reaches the origin check rather than the Host check.
    app_settings: ClassVar[dict[str, Any]] = {"allowed_hosts": ["*"]}

    @gen_test
    async def test_reason(self) -> None:
        """The 403 says in its reason that Origin and Host differ and how to fix it."""
        status, reason = await self.refusal("x", {"Origin": "https://elsewhere.example"})
        self.assertEqual((status, reason), (403, hosts.ORIGIN_REFUSED))
        (line,) = [m for m in self.log.messages() if m.startswith("Refused")]
        host = f"127.0.0.1:{self.get_http_port()}"
        self.assertIn(f"origin 'https://elsewhere.example': it does not match Host {host!r}", line)

    @gen_test
    async def test_bounded(self) -> None:
        """A huge or odd Origin or Host is logged escaped and cut short, on one line each."""
        for headers in BAD_HEADERS:
            self.assertEqual((await self.refusal("x", headers))[0], 403, headers)
        lines = [m for m in self.log.messages() if m.startswith("Refused")]
        self.assertEqual(len(lines), len(BAD_HEADERS))
        for headers, line in zip(BAD_HEADERS, lines):
            self.assertLess(len(line), 1000)
            self.assertIn(repr(headers["Origin"][:200]), line)
