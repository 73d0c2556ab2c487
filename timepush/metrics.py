"""``GET /metrics``: what the server counts, in Prometheus' text format.

``StatsCollector`` reads the ``Stats`` object (``timepush/counters.py``) at each scrape and
hands its figures to ``prometheus_client`` as metric families; the library's process collector
adds the process' CPU, memory and open file descriptors against their limit. The library writes
the format. It is the ``metrics`` extra: without it ``/metrics`` answers 404 and nothing else
changes.

With ``--processes`` a scrape reaches whichever worker the kernel picks, and that worker answers
for all of them: each writes its own exposition to a directory the parent made before the fork
(``share``, then ``start`` in each worker), once a second, and the one scraped adds the others'
to its own, each series labelled with its ``worker`` (Tornado's task id, 0 to N-1). A worker
that was restarted keeps its number, so its series carry on where the old one's stopped (a
counter's reset, which Prometheus' ``rate()`` expects), and a file whose writer is gone is left
out at once, so nothing is counted twice. The library's own multiprocess mode is not used: it
only merges the library's ``Counter``, ``Gauge`` and ``Histogram`` objects, so every count would
have to be kept twice, and it cannot run collectors, the process collector included.

Of the project it imports only ``counters`` (the buckets of the fan-out times); the figures come
from the ``stats`` object in the settings.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import tornado.httputil
import tornado.ioloop
import tornado.process
import tornado.web

try:  # the metrics extra
    import prometheus_client
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client.samples import Sample
except ImportError:
    prometheus_client = None

from timepush import counters

MISSING = "Metrics need the prometheus_client package: pip install -e '.[metrics]'"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SHARE_INTERVAL = 1.0  # seconds between the writes of a worker's figures
STALE = 5 * SHARE_INTERVAL  # a worker whose figures are older is stuck: leave it out


class StatsCollector:
    """A collector for ``prometheus_client``: ``collect()`` turns ``Stats`` into families."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        stats = self.settings["stats"]
        sourced = stats.sourced()
        yield gauge("timepush_clients", "Clients connected now", sourced.get("clients", 0))
        yield gauge(
            "timepush_max_clients",
            "Connections served at once (the limit in force)",
            self.settings["max_clients"],
        )
        yield gauge(
            "timepush_draining", "1 while the node takes no new clients", bool(stats.draining)
        )
        yield counter("timepush_connections_opened", "WebSocket connections opened", stats.opened)
        yield counter(
            "timepush_connections_closed",
            "Connections ended, by the code of the closing handshake (none: it broke off)",
            stats.ended,
            "code",
        )
        yield counter(
            "timepush_server_closes",
            "Connections the server closed, by reason",
            stats.closed,
            "reason",
        )
        yield counter(
            "timepush_refused",
            "Connections and requests refused, by reason",
            stats.refused,
            "reason",
        )
        # Node.close() counts a takeover from another node in closed["replaced"] too.
        local = stats.takeovers_here
        yield counter(
            "timepush_takeovers",
            "Connections closed because a newer one took their Id, here or on another node",
            {"local": local, "other_node": stats.closed["replaced"] - local},
            "by",
        )
        yield counter(
            "timepush_ticks", "Ticks sent out, however many clients each went to", stats.ticks
        )
        yield counter(
            "timepush_ticks_sent",
            "Ticks written to a client, one per client per tick",
            stats.ticks_sent,
        )
        yield counter(
            "timepush_ticks_skipped_slow",
            "Ticks not queued for a client that had not read the previous one",
            stats.ticks_skipped_slow,
        )
        yield counter(
            "timepush_ticks_skipped_late",
            "Ticks dropped because the machine was paused",
            stats.ticks_skipped_late,
        )
        yield counter(
            "timepush_messages_received", "Messages from clients", stats.messages_received
        )
        yield counter("timepush_pushes_sent", "Pushed messages written to a client", stats.pushed)
        yield counter(
            "timepush_pushes_skipped_slow",
            "Pushes skipped for a client that had not read its last message",
            stats.pushes_skipped_slow,
        )
        yield counter(
            "timepush_accept_paused",
            "Times the process ran out of file descriptors and paused accepting",
            stats.accept_paused,
        )
        yield fanout_histogram(stats.fanout_ms)
        if "redis" in sourced:
            yield gauge(
                "timepush_redis_up", "1 while the link to Redis is up", sourced["redis"] == "up"
            )
            cluster = sourced.get("cluster") or {}
            yield gauge(
                "timepush_cluster_nodes",
                "Live nodes in the cluster, as Redis last said (0 while down)",
                len(cluster.get("nodes", [])),
            )


def gauge(name: str, documentation: str, value: float) -> Metric:
    return GaugeMetricFamily(name, documentation, value=float(value))


def counter(
    name: str, documentation: str, value: float | dict[str, int], label: str = ""
) -> Metric:
    """A counter; with ``label``, ``value`` holds its count for each label value."""
    if not label:
        return CounterMetricFamily(name, documentation, value=float(value))
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, count in sorted(value.items()):
        family.add_metric([key], float(count))
    return family


def fanout_histogram(times: counters.FanoutTimes) -> Metric:
    cumulative, buckets = 0, []
    for bound, count in zip([*map(str, counters.FANOUT_BUCKETS), "+Inf"], times.buckets):
        cumulative += count
        buckets.append((bound, float(cumulative)))
    return HistogramMetricFamily(
        "timepush_tick_fanout_seconds",
        "How long each tick took to go out to every client",
        buckets=buckets,
        sum_value=times.total_ms / 1000,
    )


class Families:
    """Families already collected, as something ``generate_latest`` can read."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> list[Metric]:
        return self.families


def collected(settings: dict[str, Any]) -> list[Metric]:
    """This process's families, fresh; labelled with its worker's number under --processes."""
    families = [
        *StatsCollector(settings).collect(),
        *prometheus_client.ProcessCollector(registry=None).collect(),
    ]
    worker = tornado.process.task_id()
    if worker is None:
        return families
    for family in families:
        family.samples = [
            Sample(sample.name, {**sample.labels, "worker": str(worker)}, *sample[2:])
            for sample in family.samples
        ]
    return families


def exposition(settings: dict[str, Any]) -> bytes:
    """What a scrape gets: this process's families and, under --processes, every worker's."""
    families = {family.name: family for family in collected(settings)}
    for text in siblings(settings.get("metrics_directory")):
        try:
            theirs = list(text_string_to_metric_families(text))
        except ValueError:
            continue  # not written by a worker of this version: leave it out, not the scrape
        for family in theirs:
            if family.name in families:
                families[family.name].samples += family.samples
            else:
                families[family.name] = family
    return prometheus_client.generate_latest(Families(families.values()))


def siblings(directory: str | None) -> Iterator[str]:
    """The expositions the other live workers wrote (``worker-pid.prom``)."""
    if directory is None:
        return
    now = time.time()
    for path in Path(directory).glob("*.prom"):
        worker, _, pid = path.stem.partition("-")
        if worker == str(tornado.process.task_id()) or not alive(int(pid)):
            continue
        try:
            if now - path.stat().st_mtime < STALE:
                yield path.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue  # its worker has just replaced it


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process now has the pid: its file is left out once stale
    return True


def share(settings: dict[str, Any]) -> None:
    """Before the workers are forked: a directory for their figures, removed when the parent
    exits (or, if it was killed, by the next server to start). It makes no loop, thread or
    connection."""
    if prometheus_client is None:
        return
    for old in Path(tempfile.gettempdir()).glob("timepush-metrics-*-*"):
        owner = old.name.split("-")[2]
        if owner.isdigit() and not alive(int(owner)):
            shutil.rmtree(old, True)  # left by a server that was killed, so never removed
    directory = tempfile.mkdtemp(prefix=f"timepush-metrics-{os.getpid()}-")
    settings["metrics_directory"] = directory
    parent = os.getpid()
    atexit.register(lambda: os.getpid() == parent and shutil.rmtree(directory, True))


def start(settings: dict[str, Any]) -> None:
    """In a worker, on its loop: write its figures now and once a second, for the others."""
    directory = settings.get("metrics_directory")
    if directory is None:
        return
    worker, pid = tornado.process.task_id(), os.getpid()
    for old in Path(directory).glob(f"{worker}-*.prom"):
        old.unlink(missing_ok=True)  # the worker this one replaces

    def write() -> None:
        partial = Path(directory, f".{worker}-{pid}.partial")
        partial.write_bytes(prometheus_client.generate_latest(Families(collected(settings))))
        partial.replace(Path(directory, f"{worker}-{pid}.prom"))  # readers see all or none

    write()
    tornado.ioloop.PeriodicCallback(write, SHARE_INTERVAL * 1000).start()


class MetricsHandler(tornado.web.RequestHandler):
    probe = True  # scraped every few seconds: its access-log line is DEBUG

    def get(self) -> None:
        if prometheus_client is None:
            raise tornado.web.HTTPError(404, reason=MISSING)
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(exposition(self.settings))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        reason = getattr(error, "reason", None) or tornado.httputil.responses.get(status_code)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code} {reason}\n")
