"""The demonstration of docs/race.md, run as real processes: docs/unsafe.py's SendThread dies at
its first write and no tick arrives; docs/minimal.py keeps ticking through the same churn."""

from __future__ import annotations

import difflib
import re
import signal
import subprocess
import sys
from typing import Any

import pytest
from support import MS, ROOT, TIMEOUT, free_port

INTERVAL = 10 * MS
SECONDS = 100 * INTERVAL  # twice the pause that churn.py takes for ticks that stopped
NO_LOOP = "RuntimeError: There is no current event loop in thread 'Thread-1'."
LOG_RECORD = re.compile(r"\[[DIWE] \d{6} [\d:]{8} [\w.]+:\d+\] .*\n")  # Tornado's format


def churn(*args: str) -> subprocess.CompletedProcess[str]:
    """``python docs/churn.py`` with ``args``, watching for SECONDS: its output and exit status."""
    return subprocess.run(
        [sys.executable, "docs/churn.py", f"--interval={INTERVAL}", f"--seconds={SECONDS}", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=SECONDS + 5 * TIMEOUT,
    )


@pytest.fixture
def serve(start_server: Any) -> Any:
    """Start one of the two programs, ticking every INTERVAL on a free port."""
    return lambda script: start_server(f"--interval={INTERVAL}", script=script, port=free_port())


def test_unsafe(serve: Any) -> None:
    """The SendThread's write from its own thread raises, the thread dies, no tick arrives."""
    server = serve("docs/unsafe.py")
    watched = churn(f"--port={server.port}")
    assert watched.returncode == 1, watched.stdout + watched.stderr
    assert "NO TICK ARRIVED" in watched.stdout
    assert server.stop(signal.SIGINT) == 0  # the server itself lived on, without ticks
    # The loop's thread logged connections between the writes of the SendThread's traceback.
    traceback = LOG_RECORD.sub("", server.log)
    assert re.search(
        r"(?s)Exception in thread Thread-1:\n.*in send_to_all\n.*" + re.escape(NO_LOOP), traceback
    )


def test_fixed(serve: Any) -> None:
    """The same churn against the fixed program: the ticks keep coming, nothing is logged amiss."""
    server = serve("docs/minimal.py")
    watched = churn(f"--port={server.port}")
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert "The ticks kept coming." in watched.stdout
    assert server.stop(signal.SIGINT) == 0
    assert "Traceback" not in server.log
    assert "[E " not in server.log and "[W " not in server.log, server.log


def test_one_command() -> None:
    """``python docs/churn.py docs/unsafe.py`` shows the server's traceback beside the verdict."""
    watched = churn("docs/unsafe.py")
    assert watched.returncode == 1, watched.stdout + watched.stderr
    assert "server | " + NO_LOOP in watched.stdout
    assert watched.stdout.rstrip().endswith(
        "NO TICK ARRIVED: look for the SendThread's traceback in the server's output."
    )


def test_diff_shown() -> None:
    """docs/race.md shows the real diff between the two programs, all but the docstrings."""
    unsafe, fixed = (
        (ROOT / "docs" / name).read_text(encoding="utf-8").splitlines(keepends=True)
        for name in ("unsafe.py", "minimal.py")
    )
    diff = "".join(difflib.unified_diff(unsafe, fixed, "docs/unsafe.py", "docs/minimal.py", n=1))
    header, docstrings, *hunks = re.split(r"(?m)^(?=@@ )", diff)
    assert docstrings.startswith("@@ -1,")
    page = (ROOT / "docs" / "race.md").read_text(encoding="utf-8")
    shown = re.search(r"(?s)```diff\n(.*?)```", page)
    assert shown, "no diff block in docs/race.md"
    assert shown.group(1) == header + "".join(hunks)
