"""The command line (``timepush/command_line.py``): one line for a mistake, the docs' spelling."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from support import ROOT, TIMEOUT


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "app.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=10 * TIMEOUT,
    )


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--bogus"], "'bogus'"),
        (["--port=abc"], "--port=abc"),
        (["--interval=soon"], "--interval=soon"),
        (["--port"], "'port'"),
        (["--port=8888", "--max_clients=lots"], "--max_clients=lots"),
    ],
)
def test_mistake_in_one_line(args: list[str], names: str) -> None:
    """A mistyped option or a bad value gets one line naming it and pointing at --help, exit 2."""
    result = run(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert names in result.stderr and "--help" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_spells_as_the_docs() -> None:
    """--help names options with underscores, as every page does, grouped by module."""
    result = run("--help")
    assert result.returncode == 0
    names = re.findall(r"^  --(\S+?)(?:=\S*)?\s", result.stdout, flags=re.MULTILINE)
    assert {"max_clients", "allowed_hosts", "cookie_secret", "redis_interval"} <= set(names)
    assert not [name for name in names if "-" in name]
    groups = re.findall(r"^(\S+\.py) options:$", result.stdout, flags=re.MULTILINE)
    assert {"app.py", "timepush/hosts.py", "timepush/push.py"} <= set(groups)
