"""``/stats``: what the server reports for health checks and the benchmark, and the README's
table of it."""

from __future__ import annotations

import ast
import asyncio
import re
import time
from typing import Any, Callable, ClassVar

import pytest
from redis_process import RedisProcess
from servers import ServerProcess, ServerTestCase
from support import MS, TICK, TIMEOUT
from test_docs import README, parsed, plain, server_modules, table
from tornado.testing import gen_test


class TestStats(ServerTestCase):
    app_settings: ClassVar[dict[str, Any]] = {
        "max_clients": 2,
        "allowed_origins": ["https://a.example"],
    }

    @gen_test
    async def test_stats(self) -> None:
        """/stats gives the clients, ticks sent and skipped, refusals by reason, and uptime."""
        first = await self.connect("a")
        second = await self.connect("b")
        await self.refusal(None)
        await self.refusal("bad\n")
        await self.refusal("c")
        self.assertEqual((await self.refusal("a", {"Origin": "https://evil.example"}))[0], 403)
        received = 0
        for _ in range(3):
            await self.read(second)
            received += 1
        stats = await self.stats()
        self.assertEqual(stats["clients"], 2)
        self.assertEqual(stats["refused"], {"missing_id": 1, "bad_id": 1, "full": 1, "origin": 1})
        self.assertGreater(stats["uptime_seconds"], 0)
        self.assertGreaterEqual(stats["ticks_sent"], 3)
        self.assertEqual(stats["ticks_skipped_slow"], 0)

        # Stop the ticks, drain both clients, and the count of ticks sent is exact.
        self.thread.stop()
        self.thread.join()
        for connection in (first, second):
            while True:
                try:
                    await self.read(connection, timeout=200 * MS)
                except asyncio.TimeoutError:
                    break
                received += 1
        later = await self.stats()
        self.assertEqual(later["ticks_sent"], received)
        self.assertGreater(later["uptime_seconds"], stats["uptime_seconds"])


# The README's table of /stats: a row for each field, its reasons named in its cell.

WITH_REDIS = "with `--redis` only"


def readme_fields() -> dict[str, str]:
    """Each field in the README's table of /stats, and what the README says of it."""
    rows = table(README.read_text(encoding="utf-8"), {"field"})
    return {plain(row[0]): row[1] for row in rows}


def named(text: str) -> set[str]:
    """The words written as code in ``text``."""
    return set(re.findall(r"`([^`]+)`", text))


def counted_reasons(counter: str) -> set[str]:
    """The reasons the server's code counts in ``stats.refused[...]`` or ``stats.closed[...]``,
    including both branches of an ``a if ... else b``."""
    found: set[str] = set()
    for path in server_modules():
        for node in ast.walk(parsed(path)):
            if not (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute)):
                continue
            owner = node.value.value  # ``stats``, ``something.stats`` or ``settings["stats"]``
            if node.value.attr == counter and "stats" in (
                getattr(owner, "id", None),
                getattr(owner, "attr", None),
                getattr(getattr(owner, "slice", None), "value", None),
            ):
                found |= {
                    part.value
                    for part in ast.walk(node.slice)
                    if isinstance(part, ast.Constant) and isinstance(part.value, str)
                }
    return found


def compare(returned: set[str], written: set[str]) -> list[str]:
    """Say which fields /stats returned that the README lacks, and the other way round."""
    lacking = sorted(returned - written)
    extra = sorted(written - returned)
    return [f"/stats returns {name!r}, the README has no row for it" for name in lacking] + [
        f"the README has a row for {name!r}, /stats does not return it" for name in extra
    ]


def test_readme_names_every_field(start_server: Callable[..., ServerProcess]) -> None:
    """The README's table has a row for each field of a single process's /stats, and no other
    (the rows marked for --redis aside)."""
    fields = readme_fields()
    alone = {name for name, text in fields.items() if WITH_REDIS not in text}
    problems = compare(set(start_server(f"--interval={TICK}").stats()), alone)
    assert not problems, "\n".join(problems)


def test_readme_names_every_cluster_field(
    start_server: Callable[..., ServerProcess], redis_server: RedisProcess
) -> None:
    """With --redis, /stats returns every field of the README's table, and the README names
    what ``redis`` and ``cluster`` hold."""
    pytest.importorskip("redis", reason="the redis package is missing: pip install -e '.[redis]'")
    node = start_server(
        f"--interval={TICK}", f"--redis={redis_server.url}", f"--redis_interval={50 * MS}"
    )
    deadline = time.monotonic() + 5 * TIMEOUT
    while not (stats := node.stats()).get("cluster"):
        assert time.monotonic() < deadline, f"the node never joined its cluster: {stats}"
        time.sleep(10 * MS)
    fields = readme_fields()
    problems = compare(set(stats), set(fields))
    if stats["redis"] not in named(fields.get("redis", "")):
        problems.append(f"the README's row for 'redis' does not name {stats['redis']!r}")
    unnamed = set(stats["cluster"]) - named(fields.get("cluster", ""))
    problems += [
        f"the README's row for 'cluster' does not name {name!r}" for name in sorted(unnamed)
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("counter", ["refused", "closed"])
def test_readme_lists_the_reasons_counted(counter: str) -> None:
    """The reasons the README lists for ``refused`` and ``closed`` are those the code counts."""
    in_code = counted_reasons(counter)
    assert in_code, f"no stats.{counter}[...] found in the server's code; update this check"
    in_readme = named(readme_fields()[counter])
    assert in_readme == in_code, (
        f"{counter}: only in the README {sorted(in_readme - in_code)}, "
        f"only in the code {sorted(in_code - in_readme)}"
    )
