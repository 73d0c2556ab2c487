"""Debian's ``promtool`` and ``prometheus`` (both in the package ``prometheus``): the linter of
an exposition, and a server on a free loopback port scraping ours, its files in a temp dir."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from support import MS, TIMEOUT, free_port

PROMTOOL = Path(os.environ.get("PROMTOOL", shutil.which("promtool") or "/usr/bin/promtool"))
PROMETHEUS = Path(os.environ.get("PROMETHEUS", shutil.which("prometheus") or "/usr/bin/prometheus"))


def prometheus_missing() -> str | None:
    """Say what is missing to lint and scrape metrics, or return None."""
    for program in (PROMTOOL, PROMETHEUS):
        if not program.exists():
            return f"no {program.name} at {program}: apt-get install prometheus"
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return "the prometheus_client package is missing: pip install -e '.[test]'"
    return None


def promtool_problems(exposition: str) -> str:
    """What ``promtool check metrics`` finds wrong in an exposition (empty when nothing)."""
    result = subprocess.run(
        [str(PROMTOOL), "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=5 * TIMEOUT,
    )
    problems = (result.stdout + result.stderr).strip()
    return problems or ("" if result.returncode == 0 else f"exit status {result.returncode}")


class PrometheusProcess:
    """``prometheus`` on a free loopback port, scraping ``targets`` (host:port) every
    ``interval`` seconds, its configuration and data in ``directory``."""

    def __init__(self, directory: Path, targets: list[str], interval: float = 100 * MS) -> None:
        self.port = free_port()
        every = f"{max(1, round(interval * 1000))}ms"
        config = directory / "prometheus.yml"
        # JSON is YAML, and needs no quoting rules of its own.
        config.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": every, "scrape_timeout": every},
                    "scrape_configs": [
                        {"job_name": "timepush", "static_configs": [{"targets": targets}]}
                    ],
                }
            )
        )
        self.log_path = directory / "prometheus.log"
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                [
                    str(PROMETHEUS),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=directory,
            )
        deadline = time.monotonic() + 10 * TIMEOUT
        while not self.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("prometheus did not start:\n" + self.log)
            time.sleep(20 * MS)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=TIMEOUT) as response:
                return response.status == 200
        except OSError:
            return False

    def query(self, expression: str) -> list[dict[str, Any]]:
        """The result of an instant query through the HTTP API: a list of series."""
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        with urllib.request.urlopen(url, timeout=5 * TIMEOUT) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def value(self, expression: str) -> float | None:
        """The one value an instant query gives, or None while it gives nothing."""
        result = self.query(expression)
        return float(result[0]["value"][1]) if result else None

    def stop(self, timeout: float = 5 * TIMEOUT) -> None:
        """Stop it by its own pid."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
