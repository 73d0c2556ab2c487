"""``/metrics``: what the server counts in Prometheus' format, linted by promtool, scraped by a
real Prometheus, and every worker's figures in one scrape under ``--processes``."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, ClassVar
from unittest import mock

import pytest
from clients import Reader, closing
from prometheus_process import PrometheusProcess
from redis_process import RedisProcess
from servers import ServerProcess, ServerTestCase
from support import MS, TICK, TIMEOUT, get_json
from tornado.httpclient import HTTPClientError
from tornado.testing import gen_test

import app
from timepush import metrics

prometheus_client = pytest.importorskip(
    "prometheus_client", reason="prometheus_client is missing: pip install -e '.[test]'"
)
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

Figures = dict[tuple[str, frozenset[tuple[str, str]]], float]


def figures(exposition: str) -> Figures:
    """Each sample of an exposition by its name and labels, which no two samples share."""
    found: Figures = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in found, f"two samples {key}:\n{exposition}"
            found[key] = sample.value
    return found


def value(found: Figures, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def total(found: Figures, name: str) -> float:
    """A sample added up over every label value (every worker, say)."""
    return sum(figure for (sample, _), figure in found.items() if sample == name)


def scrape(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=5 * TIMEOUT) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return response.read().decode()


class TestMetrics(ServerTestCase):
    app_settings: ClassVar[dict[str, Any]] = {"max_clients": 5}

    async def metrics(self) -> Figures:
        response = await self.http_client.fetch(self.get_url("/metrics"))
        return figures(response.body.decode())

    @gen_test
    async def test_counts(self) -> None:
        """Connections opened and ended by close code, takeovers, refusals by reason, and the
        ticks, whose histogram holds every one of them."""
        first = await self.connect("a")
        leaving = await self.connect("b")
        await self.refusal(None)
        await self.connect("a")  # takes "a" over: the first is closed with 4000
        await self.read_until_closed(first)
        leaving.close(1000)
        await self.wait_until(lambda: sum(app.stats.ended.values()) == 2)
        await self.wait_until(lambda: app.stats.ticks >= 3)
        self.thread.stop()
        self.thread.join()

        found = await self.metrics()
        self.assertEqual(value(found, "timepush_clients"), 1)
        self.assertEqual(value(found, "timepush_max_clients"), 5)
        self.assertEqual(value(found, "timepush_connections_opened_total"), 3)
        self.assertEqual(value(found, "timepush_connections_closed_total", code="4000"), 1)
        self.assertEqual(value(found, "timepush_connections_closed_total", code="1000"), 1)
        self.assertEqual(value(found, "timepush_server_closes_total", reason="replaced"), 1)
        self.assertEqual(value(found, "timepush_takeovers_total", by="local"), 1)
        self.assertEqual(value(found, "timepush_takeovers_total", by="other_node"), 0)
        self.assertEqual(value(found, "timepush_refused_total", reason="missing_id"), 1)
        ticks = value(found, "timepush_ticks_total")
        self.assertEqual(ticks, app.stats.ticks)
        self.assertEqual(value(found, "timepush_tick_fanout_seconds_count"), ticks)
        self.assertEqual(value(found, "timepush_tick_fanout_seconds_bucket", le="+Inf"), ticks)
        self.assertGreater(value(found, "timepush_tick_fanout_seconds_sum"), 0)
        self.assertIsNone(value(found, "timepush_redis_up"))  # without --redis
        self.assertGreater(value(found, "process_open_fds"), 0)
        self.assertGreater(value(found, "process_max_fds"), value(found, "process_open_fds"))
        self.assertGreater(value(found, "process_resident_memory_bytes"), 0)
        self.assertIn(("process_cpu_seconds_total", frozenset()), found)

    @gen_test
    async def test_without_the_library(self) -> None:
        """Without prometheus_client, /metrics answers 404 naming the extra; /stats is as ever."""
        missing = mock.patch.object(metrics, "prometheus_client", None)
        with missing, self.assertRaises(HTTPClientError) as caught:
            await self.http_client.fetch(self.get_url("/metrics"))
        self.assertEqual(caught.exception.code, 404)
        self.assertIn(".[metrics]", caught.exception.message or "")
        self.assertIn(".[metrics]", caught.exception.response.body.decode())
        self.assertEqual((await self.stats())["clients"], 0)


def connect_until_both(server: ServerProcess, readers: list[Reader]) -> Any:
    """Connect readers until both workers have some; return each node's clients."""

    async def connect() -> dict[str, int]:
        counts: dict[str, int] = {}
        deadline = time.monotonic() + 10 * TIMEOUT
        while len([n for n in counts.values() if n]) < 2:
            assert time.monotonic() < deadline, counts
            readers.append(await Reader.connect(server.ws_url(f"c{len(readers)}")))
            stats = await asyncio.to_thread(get_json, server.url + "/stats")
            counts[stats["node"]] = stats["clients"]
        return counts

    return connect()


def start_pair(start_server: Callable[..., ServerProcess], redis: RedisProcess) -> ServerProcess:
    server = start_server(
        "--processes=2",
        f"--interval={TICK}",
        f"--redis={redis.url}",
        f"--redis_interval={50 * MS}",
    )
    joined = r"Node \S+ joined the cluster"
    server.wait_for_log(rf"{joined}(.|\n)*{joined}")
    return server


@pytest.mark.parametrize("processes", [1, 2])
def test_promtool_accepts_it(
    start_server: Callable[..., ServerProcess],
    redis_server: RedisProcess,
    promtool: Callable[[str], str],
    processes: int,
) -> None:
    """``promtool check metrics`` finds nothing to say about a scrape with clients, a takeover
    and refusals, alone or merged from two workers."""
    server = start_server(
        f"--processes={processes}", f"--interval={TICK}", f"--redis={redis_server.url}"
    )
    server.wait_for_log(r"joined the cluster")

    async def scenario() -> str:
        first = await Reader.connect(server.ws_url("a"))
        await Reader.connect(server.ws_url("a"))
        await first.until_closed()
        page = server.url + "/websocket"
        for refused in (page, page + "?Id=%0A"):  # no Id, a bad one
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(refused, timeout=5 * TIMEOUT)
        deadline = time.monotonic() + 5 * TIMEOUT
        while True:  # until each worker has written its figures for the others
            exposition = await asyncio.to_thread(scrape, server.url)
            workers = total(figures(exposition), "timepush_redis_up")
            if processes == 1 or workers == processes:
                return exposition
            assert time.monotonic() < deadline, exposition
            await asyncio.sleep(20 * MS)

    exposition = asyncio.run(closing(scenario()))
    assert 'timepush_refused_total{reason="missing_id"' in exposition
    assert promtool(exposition) == ""


def test_prometheus_counts_every_worker(
    start_server: Callable[..., ServerProcess],
    redis_server: RedisProcess,
    start_prometheus: Callable[[list[str]], PrometheusProcess],
) -> None:
    """A Prometheus server scraping a two-process server's port finds every client, whichever
    worker answers each scrape, and both workers' links to Redis up."""
    server = start_pair(start_server, redis_server)
    prometheus = start_prometheus([f"127.0.0.1:{server.port}"])

    async def scenario() -> None:
        readers: list[Reader] = []
        await connect_until_both(server, readers)
        queries = {
            "sum(timepush_clients)": len(readers),
            "count(timepush_clients)": 2,
            "sum(timepush_redis_up)": 2,
            "max(timepush_cluster_nodes)": 2,
        }
        deadline = time.monotonic() + 10 * TIMEOUT
        while True:
            found = {q: await asyncio.to_thread(prometheus.value, q) for q in queries}
            if found == queries:
                return
            assert time.monotonic() < deadline, f"{found} != {queries}\n{prometheus.log}"
            await asyncio.sleep(50 * MS)

    asyncio.run(closing(scenario()))


def test_restarted_worker_counted_once(
    start_server: Callable[..., ServerProcess], redis_server: RedisProcess
) -> None:
    """A worker killed and started again reports its own clients, and the dead one's figures
    are gone at once: no client is counted twice."""
    server = start_pair(start_server, redis_server)

    async def scenario() -> None:
        readers: list[Reader] = []
        victim = min(await connect_until_both(server, readers))
        os.kill(int(victim.rpartition("-")[2]), signal.SIGKILL)
        await asyncio.to_thread(server.wait_for_log, r"killed by signal 9, restarting")
        await readers[0].wait_for(lambda _: any(reader.closed for reader in readers))
        # From now on no scrape counts the dead worker's clients, until the new one reports.
        deadline = time.monotonic() + 10 * TIMEOUT
        while True:
            found = figures(await asyncio.to_thread(scrape, server.url))
            connected = len([reader for reader in readers if reader.closed is None])
            clients = total(found, "timepush_clients")
            assert clients <= connected, found
            workers = {
                dict(labels)["worker"] for name, labels in found if name == "timepush_clients"
            }
            if workers == {"0", "1"} and clients == connected:
                break
            assert time.monotonic() < deadline, (found, connected)
            await asyncio.sleep(10 * MS)
        assert 0 < connected < len(readers)

    asyncio.run(closing(scenario()))
