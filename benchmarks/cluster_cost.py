"""What joining a cluster costs a node with idle clients: Redis commands a second and the node's
CPU, at each number of clients, with and without ``--redis``.

    python benchmarks/cluster_cost.py                  # 1,000 and 10,000 clients, 10 s each
    python benchmarks/cluster_cost.py --clients 1000 --seconds 5

One ``python app.py`` at a time, on loopback, with its own throwaway ``redis-server``; the idle
clients are raw sockets of this process that read and drop the ticks. A cluster whose cost grows
with the clients connected shows it here: the Redis figure climbs with the clients. What it
leaves out: connects, closes and takeovers (each a fixed few commands; see docs/deploy.md), and
several nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from loadgen import raise_file_limit
from processes import ROOT, RedisServer, cpu_seconds, free_port, wait_until
from report import machine

MAX_CLIENTS = 10_000


class IdleClient(asyncio.Protocol):
    """A client that opens the WebSocket, then reads whatever arrives and keeps none of it."""

    def __init__(self, port: int, client_id: str) -> None:
        self.request = (
            f"GET /websocket?Id={client_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.head = b""
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if not self.opened.done():
            self.head += data
            if b"\r\n\r\n" in self.head:
                if self.head.startswith(b"HTTP/1.1 101"):
                    self.opened.set_result(None)
                else:
                    self.opened.set_exception(RuntimeError(f"refused: {self.head[:60]!r}"))

    def connection_lost(self, error: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during the handshake"))


async def open_clients(port: int, count: int) -> list[asyncio.BaseTransport]:
    """``count`` WebSocket connections, a few hundred at a time."""
    loop = asyncio.get_running_loop()
    transports: list[asyncio.BaseTransport] = []

    async def one(n: int) -> asyncio.BaseTransport:
        transport, client = await loop.create_connection(
            lambda: IdleClient(port, f"idle-{n}"), "127.0.0.1", port
        )
        await asyncio.wait_for(client.opened, 30)
        return transport

    for start in range(0, count, 250):
        batch = range(start, min(count, start + 250))
        transports += await asyncio.gather(*(one(n) for n in batch))
    return transports


def redis_commands(port: int) -> int:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "INFO", "stats"], capture_output=True, text=True, check=True
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("total_commands_processed"))
    return int(line.split(":")[1])


async def measure(app: Path, clients: int, with_redis: bool, seconds: float) -> dict[str, float]:
    redis = RedisServer() if with_redis else None
    port = free_port()
    command = [sys.executable, str(app), f"--port={port}", f"--max_clients={clients + 10}"]
    command += ["--interval=1", "--ping_interval=0", "--logging=warning"]
    if redis is not None:
        command.append(f"--redis={redis.url}")
    server = subprocess.Popen(
        command, cwd=app.parent, stdin=subprocess.DEVNULL, preexec_fn=raise_file_limit
    )
    transports: list[asyncio.BaseTransport] = []
    try:
        if not wait_until(lambda: stats(port) is not None, timeout=20):
            raise RuntimeError("the server did not start")
        transports = await open_clients(port, clients)
        await asyncio.sleep(3)  # the claims are written, the rounds are steady
        ticks_before = stats(port)["ticks_sent"]
        cpu, commands, started = cpu_seconds(server.pid), 0, time.monotonic()
        if redis is not None:
            commands = redis_commands(redis.port)
        await asyncio.sleep(seconds)
        took = time.monotonic() - started
        figures = {
            "node_cpu_ms_per_s": round(1000 * (cpu_seconds(server.pid) - cpu) / took, 1),
            "redis_commands_per_s": 0.0,
            "ticks_sent_per_s": round((stats(port)["ticks_sent"] - ticks_before) / took),
        }
        if redis is not None:
            # One INFO of ours is in the count.
            figures["redis_commands_per_s"] = round(
                (redis_commands(redis.port) - commands - 1) / took, 1
            )
        return figures
    finally:
        for transport in transports:
            transport.abort()  # type: ignore[attr-defined]
        server.terminate()
        server.wait(30)
        if redis is not None:
            redis.stop()


def stats(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=2) as response:
            return json.load(response)
    except OSError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measurement")
    parser.add_argument("--app", type=Path, default=ROOT / "app.py", help="the server to run")
    args = parser.parse_args()
    if max(args.clients) > MAX_CLIENTS or min(args.clients) < 1:
        parser.error(f"--clients: from 1 to {MAX_CLIENTS}")
    raise_file_limit()
    print(json.dumps({"machine": machine(), "app": str(args.app)}))
    columns = ("clients", 8), ("--redis", 8), ("Redis commands/s", 17), ("node CPU ms/s", 14)
    print(" ".join(f"{name:>{width}}" for name, width in (*columns, ("ticks/s", 8))))
    for clients in args.clients:
        for with_redis in (False, True):
            figures = asyncio.run(measure(args.app, clients, with_redis, args.seconds))
            print(
                f"{clients:>8} {'yes' if with_redis else 'no':>8} "
                f"{figures['redis_commands_per_s']:>17} {figures['node_cpu_ms_per_s']:>14} "
                f"{figures['ticks_sent_per_s']:>8}",
                flush=True,
            )


if __name__ == "__main__":
    main()
