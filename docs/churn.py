"""Keep clients coming and going for a few seconds, and say whether the ticks keep coming.

    python docs/churn.py docs/unsafe.py    # start that server on a free port and watch it
    python docs/churn.py docs/minimal.py   # the same against the fixed version
    python docs/churn.py --port=8888       # a server already started with --interval=0.01

One client stays connected and counts the ticks it gets, and checks that each is a timestamp;
a few others connect and leave again and again, so that the server's clients dict changes all
the time. Loopback only. The exit status is 1 if the ticks stopped or arrived broken, else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from tornado.websocket import WebSocketClientConnection, websocket_connect

HOST = "127.0.0.1"
CHURNERS = 8  # clients coming and going at the same time
STALL = 50  # intervals without a tick that count as the ticks having stopped
REPORT_EVERY = 0.5  # seconds


class Seen:
    """What the clients saw, counted as they go."""

    def __init__(self) -> None:
        self.ticks: list[float] = []  # when each tick reached the client that stays
        self.broken: list[str] = []  # messages that were not a timestamp
        self.dropped = 0  # times the server closed the staying client's connection
        self.connections = 0  # connections opened by the clients that come and go
        self.start = self.end = 0.0  # the time watched, from when the staying client is in


def say(line: str) -> None:
    """Print ``line`` in one write, so that the server's lines, copied in by another thread,
    never cut into it."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def url(port: int, client_id: str) -> str:
    return f"ws://{HOST}:{port}/websocket?Id={client_id}"


async def close(connection: WebSocketClientConnection) -> None:
    """Close and wait for the server's answer, so that the server sees every client leave."""
    connection.close()
    with contextlib.suppress(asyncio.TimeoutError):
        while await asyncio.wait_for(connection.read_message(), 1) is not None:
            pass


async def stay(connection: WebSocketClientConnection, port: int, seen: Seen) -> None:
    """The client that stays connected: record every tick it gets."""
    while (left := seen.end - time.monotonic()) > 0:
        try:
            message = await asyncio.wait_for(connection.read_message(), left)
        except asyncio.TimeoutError:
            break
        if message is None:  # the server dropped this client: count it, and come back
            seen.dropped += 1
            connection = await websocket_connect(url(port, "stays"))
            continue
        seen.ticks.append(time.monotonic())
        try:
            datetime.datetime.fromisoformat(str(message))
        except ValueError:
            seen.broken.append(repr(message))
    await close(connection)


async def come_and_go(port: int, seen: Seen, limit: int) -> None:
    """Connect, leave, connect again under a new Id, until the end or the limit."""
    while time.monotonic() < seen.end and seen.connections < limit:
        seen.connections += 1
        await close(await websocket_connect(url(port, f"churn-{seen.connections}")))


async def report(seen: Seen) -> None:
    """A line every REPORT_EVERY seconds: the ticks in that time, the connections so far."""
    say("  time   ticks  connections")
    counted = 0
    while (now := time.monotonic()) < seen.end:
        await asyncio.sleep(min(REPORT_EVERY, seen.end - now))
        ticks = len(seen.ticks) - counted
        counted += ticks
        say(f"{time.monotonic() - seen.start:5.1f} s {ticks:7d} {seen.connections:12d}")


async def watch(port: int, seconds: float, limit: int) -> Seen:
    seen = Seen()
    # The staying client connects before the others, so that it is the first entry of clients
    # (a dict keeps its order): the SendThread's first write then always meets an open
    # connection, never one that is leaving (which fails with another error).
    staying = await websocket_connect(url(port, "stays"))
    seen.start = time.monotonic()
    seen.end = seen.start + seconds
    await asyncio.gather(
        stay(staying, port, seen),
        report(seen),
        *(come_and_go(port, seen, limit) for _ in range(CHURNERS)),
    )
    return seen


def verdict(seen: Seen, interval: float) -> bool:
    """Say what the client that stayed saw; return whether the ticks kept coming."""
    moments = [seen.start, *seen.ticks, seen.end]
    longest = max(later - earlier for earlier, later in zip(moments, moments[1:]))
    say(
        f"{len(seen.ticks)} ticks in {seen.end - seen.start:.1f} s (one every {interval} s "
        f"expected), longest wait {longest:.2f} s; {seen.connections} connections came and went."
    )
    for message in seen.broken[:5]:
        say(f"Not a timestamp: {message}")
    if seen.dropped:
        say(f"The server dropped the client that stays {seen.dropped} times.")
    if not seen.ticks:
        say("NO TICK ARRIVED: look for the SendThread's traceback in the server's output.")
    elif longest > STALL * interval:
        say("THE TICKS STOPPED: look for the SendThread's traceback in the server's output.")
    elif seen.broken or seen.dropped:
        say("SOME TICKS ARRIVED BROKEN.")
    else:
        say("The ticks kept coming.")
        return True
    return False


def listens(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((HOST, port)) == 0


def start_server(
    script: Path, interval: float
) -> tuple[subprocess.Popen[str], threading.Thread, int]:
    """Start ``python script`` on a free port; copy what it prints here, each line marked."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
    command = [str(script), f"--port={port}", f"--interval={interval}", "--logging=warning"]
    # Warnings and tracebacks only: a line for each of thousands of connections would hide them.
    say("$ python " + " ".join(command))
    server = subprocess.Popen(
        [sys.executable, *command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )

    def copy() -> None:
        assert server.stdout is not None
        for line in server.stdout:
            say(f"server | {line.rstrip()}")

    copier = threading.Thread(target=copy, daemon=True)
    copier.start()
    deadline = time.monotonic() + 10
    while not listens(port):
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            sys.exit(f"{script} did not start")
        time.sleep(0.01)
    return server, copier, port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("script", nargs="?", type=Path, help="a server to start, such as docs/unsafe.py")
    add("--port", type=int, default=8888, help="the server's port, when no script is given")
    add("--interval", type=float, default=0.01, help="the server's seconds between ticks")
    add("--seconds", type=float, default=3.0, help="how long to watch")
    add("--limit", type=int, default=5000, help="connections to open at most")
    args = parser.parse_args()
    server = None
    if args.script is not None:
        server, copier, args.port = start_server(args.script, args.interval)
    elif not listens(args.port):
        sys.exit(f"Nothing listens on {HOST}:{args.port}: python docs/unsafe.py --interval=0.01")
    say(f"For {args.seconds} s: one client stays, {CHURNERS} come and go.")
    try:
        seen = asyncio.run(watch(args.port, args.seconds, args.limit))
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)  # Ctrl-C, as in a terminal
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()  # it ignored Ctrl-C (started with SIGINT ignored): never leave it
                server.wait()
            copier.join(1)  # the last of its output before the verdict
    return 0 if verdict(seen, args.interval) else 1


if __name__ == "__main__":
    sys.exit(main())
