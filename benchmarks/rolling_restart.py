"""A rolling restart behind nginx: do the clients notice?

    python benchmarks/rolling_restart.py                    # 1,000 clients, 10 s drain, 1 s ticks
    python benchmarks/rolling_restart.py --clients 200 --drain 2 --interval 0.2

The layout of docs/deploy.md on loopback: one ``redis-server``, two ``python app.py`` nodes with
the systemd unit's options, and Debian's nginx with ``deploy/nginx.conf`` in front, over TLS.
``--clients`` clients that come back as the page does (tests/clients.py's ``Returner``: after
1012 at a random moment of ``--window`` seconds) connect through nginx; then node A gets
SIGTERM, is started again on its port, is waited for until ``/readyz`` answers 200, and node B
after it, as "Deploying a new version" in docs/deploy.md does. It prints, as JSON, the ticks each
client missed, how the closes and the comebacks were spread (the peak per 100 ms), and the
machine. The clients run in this one process, on one core, with TLS: on a small machine they,
not the nodes, are the bottleneck, and their clock readings come late when they are busy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

from loadgen import raise_file_limit
from report import machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the harness that starts nginx, Redis and the nodes

from nginx_process import SITE, NginxProcess, fill_site, self_signed_certificate  # noqa: E402
from redis_process import RedisProcess  # noqa: E402
from rolling import RollingRestart  # noqa: E402
from servers import ServerProcess  # noqa: E402
from support import free_port  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--drain", type=float, default=10.0, help="the nodes' --drain_seconds")
    parser.add_argument("--interval", type=float, default=1.0, help="the nodes' --interval")
    parser.add_argument("--window", type=float, default=5.0, help="the page's restartWindow")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    raise_file_limit()
    with tempfile.TemporaryDirectory() as temp:
        directory = Path(temp)
        (directory / "redis").mkdir()
        (directory / "tls").mkdir()
        (directory / "nginx").mkdir()
        redis = RedisProcess(directory / "redis")
        started: list[ServerProcess] = []

        def start(port: int = 0) -> ServerProcess:
            node = ServerProcess(
                "--address=127.0.0.1",
                "--xheaders",
                f"--redis={redis.url}",
                f"--interval={args.interval}",
                f"--drain_seconds={args.drain}",
                port=port,
            )
            started.append(node)
            return node

        nginx = None
        try:
            nodes = [start(), start()]
            port = free_port()
            site = fill_site(
                SITE.read_text(),
                http_port=free_port(),
                https_port=port,
                certificate=self_signed_certificate(directory / "tls"),
                upstreams=[node.port for node in nodes],
            )
            nginx = NginxProcess(site, directory / "nginx", connections=4 * args.clients + 64)
            rolling = RollingRestart(
                f"wss://127.0.0.1:{port}/websocket",
                nodes,
                start,
                count=args.clients,
                window=args.window,
                interval=args.interval,
            )
            asyncio.run(rolling.run(drain_timeout=args.drain + 30))
            figures = rolling.figures()
            errors = [line for node in started for line in node.lines if line.startswith("[E ")]
            settings = {name: value for name, value in vars(args).items() if name != "json"}
            report = {"machine": machine(), "settings": settings, **figures}
            text = json.dumps({**report, "errors_logged": len(errors)}, indent=1)
            print(text)
            if args.json:
                args.json.write_text(text + "\n")
        finally:
            if nginx is not None:
                nginx.close()
            for node in started:
                node.close()
            redis.stop()


if __name__ == "__main__":
    main()
