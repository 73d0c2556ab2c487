"""Two pages in headless Chromium, on two nodes of a cluster, with the same Id."""

from __future__ import annotations

import time
from typing import Any

from redis_process import RedisProcess
from support import MS, TIMEOUT

# Importing the browser tests' helper also skips this file without Chromium (fails it on CI).
from test_browser import take_over


def test_takeover_across_nodes(
    start_server: Any,
    redis_server: RedisProcess,
    new_page: Any,
) -> None:
    """The older page, on node A, shows the takeover by a page on node B and stays closed."""
    args = ("--interval=0.05", f"--redis={redis_server.url}", "--redis_interval=0.05")
    a, b = start_server(*args), start_server(*args)
    deadline = time.monotonic() + 5 * TIMEOUT
    while len((a.stats()["cluster"] or {}).get("nodes", [])) < 2:
        assert time.monotonic() < deadline, "the nodes did not see each other"
        time.sleep(10 * MS)
    take_over(new_page, a.url, b.url)
    assert (a.stats()["clients"], b.stats()["clients"]) == (0, 1)
