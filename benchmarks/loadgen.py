"""Many WebSocket clients in one process: the load generator of the fan-out benchmark.

It opens ``--clients`` connections to ``ws://127.0.0.1:PORT/websocket?Id=...`` at a bounded
rate, then reads every tick the server pushes and notes how late it came. It is built to stay
out of the way of what it measures:

- raw non-blocking sockets on one ``epoll``, the HTTP upgrade written by hand, and a frame parser
  that only knows what a server sends here (small unmasked text frames, ``0x81 len payload``);
- the receive time of a tick is the kernel's (``SO_TIMESTAMPNS``): when the bytes reached this
  socket, not when this busy process got round to reading them. The difference between the two,
  the *read delay*, is reported too, as a check that this process keeps up.

A tick's text is ``str(datetime.datetime.now())`` taken just after the turn of the interval, so
that text floored to the interval is the tick's boundary, and lag = receive time - boundary.

It talks to ``fanout.py`` in JSON lines: it prints ``{"event": "connected", ...}`` once every
connection is open or has failed, then answers ``report FIRST LAST`` (tick numbers, i.e. the
boundary divided by the interval) with the lags it saw, and exits on ``quit``, at the end of its
standard input, or after ``--max-seconds``, whichever comes first. Both sides of that talk are
in this file: ``LoadGenerators`` at the end starts and drives several of these processes, and
``lag_figures`` merges what they saw.

Left out: masking and sending (these clients never speak), pings, fragmented or long frames.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import errno
import json
import math
import os
import resource
import select
import socket
import struct
import subprocess
import sys
import time
from typing import Any

# Linux's SO_TIMESTAMPNS (which the socket module does not name): a struct timespec of the time
# each packet arrived, on the wall clock, with every recvmsg().
SO_TIMESTAMPNS = 35
TIMESPEC = struct.Struct("@qq")
ANCILLARY_SIZE = socket.CMSG_SPACE(TIMESPEC.size)
READ_SIZE = 65536

# Any key works for a server; the client is supposed to check the accept value, this one need not.
REQUEST = (
    "GET /websocket?Id={client_id} HTTP/1.1\r\n"
    "Host: 127.0.0.1:{port}\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "\r\n"
)

CONNECTING, HANDSHAKING, OPEN, CLOSED = range(4)
OPCODE_TEXT, OPCODE_CLOSE = 0x1, 0x8


class Client:
    """One connection and the bytes of a frame that has not fully arrived yet."""

    __slots__ = ("buffer", "index", "sock", "started", "state")

    def __init__(self, sock: socket.socket, index: int, started: float) -> None:
        self.sock = sock
        self.index = index
        self.state = CONNECTING
        self.buffer = b""
        self.started = started


class TickRecorder:
    """Lags by tick: tick number -> kernel lags and read delays, in nanoseconds."""

    def __init__(self, interval: float) -> None:
        self.interval_ns = round(interval * 1e9)
        self.by_payload: dict[bytes, tuple[list[int], list[int], int]] = {}
        self.lags: dict[int, list[int]] = {}
        self.delays: dict[int, list[int]] = {}

    def record(self, payload: bytes, received_ns: int, read_ns: int) -> None:
        entry = self.by_payload.get(payload)
        if entry is None:
            entry = self.by_payload[payload] = self.new_tick(payload)
        lags, delays, boundary_ns = entry
        lags.append(received_ns - boundary_ns)
        delays.append(read_ns - received_ns)

    def new_tick(self, payload: bytes) -> tuple[list[int], list[int], int]:
        """Parse a tick's text once; every other client gets the same bytes."""
        sent_at = datetime.datetime.fromisoformat(payload.decode())
        sent_ns = round(sent_at.timestamp() * 1e6) * 1000
        tick = sent_ns // self.interval_ns
        lags = self.lags.setdefault(tick, [])
        delays = self.delays.setdefault(tick, [])
        return lags, delays, tick * self.interval_ns

    def report(self, first: int, last: int) -> dict[str, dict[str, list[int]]]:
        """The lags and read delays of ticks first..last, in microseconds."""
        return {
            str(tick): {
                "lags_us": [lag // 1000 for lag in self.lags.get(tick, [])],
                "delays_us": [delay // 1000 for delay in self.delays.get(tick, [])],
            }
            for tick in range(first, last + 1)
        }


def split_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Cut server frames (unmasked) out of ``data``: ([(opcode, payload)], leftover bytes)."""
    frames = []
    start = 0
    while len(data) - start >= 2:
        opcode = data[start] & 0x0F
        length = data[start + 1] & 0x7F
        header = 2
        if length == 126:
            if len(data) - start < 4:
                break
            length = int.from_bytes(data[start + 2 : start + 4], "big")
            header = 4
        elif length == 127:
            if len(data) - start < 10:
                break
            length = int.from_bytes(data[start + 2 : start + 10], "big")
            header = 10
        end = start + header + length
        if end > len(data):
            break
        frames.append((opcode, data[start + header : end]))
        start = end
    return frames, data[start:]


def kernel_time_ns(ancillary: list[tuple[int, int, bytes]], fallback: int) -> int:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanoseconds = TIMESPEC.unpack(data)
            return seconds * 1_000_000_000 + nanoseconds
    return fallback


class LoadGenerator:
    """Open the connections at a bounded rate, then read ticks until told to stop."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.epoll = select.epoll()
        self.clients: dict[int, Client] = {}
        self.recorder = TickRecorder(args.interval)
        self.started = time.monotonic()
        self.target = args.clients
        self.launched = 0
        self.pending = 0
        self.open = 0
        self.failed: dict[str, int] = {}
        self.closed_by_server = 0
        self.announced = False
        self.running = True
        self.command_buffer = b""
        self.stdin = sys.stdin.fileno()
        self.epoll.register(self.stdin, select.EPOLLIN)

    # Connecting

    def launch_due_connections(self, now: float) -> None:
        due = min(self.target, int((now - self.started) * self.args.rate) + 1)
        while self.launched < due and self.pending < self.args.max_pending:
            self.launch(now)

    def launch(self, now: float) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        # Close with a reset: no TIME_WAIT left behind by tens of thousands of sockets.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.launched += 1
        self.pending += 1
        code = sock.connect_ex(("127.0.0.1", self.args.port))
        client = Client(sock, self.launched, now)
        self.clients[sock.fileno()] = client
        if code not in (0, errno.EINPROGRESS):
            self.fail(client, errno.errorcode.get(code, str(code)))
            return
        self.epoll.register(sock.fileno(), select.EPOLLOUT)

    def on_connected(self, fd: int, client: Client) -> None:
        code = client.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self.fail(client, errno.errorcode.get(code, str(code)))
            return
        client_id = f"{self.args.id_prefix}-{client.index}"
        client.sock.send(REQUEST.format(client_id=client_id, port=self.args.port).encode())
        client.state = HANDSHAKING
        self.epoll.modify(fd, select.EPOLLIN)

    def on_handshake_data(self, client: Client, data: bytes) -> None:
        client.buffer += data
        head, found, rest = client.buffer.partition(b"\r\n\r\n")
        if not found:
            if len(client.buffer) > 8192:
                self.fail(client, "oversized response")
            return
        if not head.startswith(b"HTTP/1.1 101"):
            self.fail(client, head.split(b"\r\n", 1)[0].decode(errors="replace"))
            return
        client.state = OPEN
        client.buffer = b""
        self.pending -= 1
        self.open += 1
        if rest:
            self.on_frames(client, rest, time.time_ns(), time.time_ns())

    def fail(self, client: Client, reason: str) -> None:
        self.failed[reason] = self.failed.get(reason, 0) + 1
        if client.state in (CONNECTING, HANDSHAKING):
            self.pending -= 1
        self.drop(client)

    def drop(self, client: Client) -> None:
        if client.state == OPEN:
            self.open -= 1
        client.state = CLOSED
        fd = client.sock.fileno()
        if fd >= 0:
            self.clients.pop(fd, None)
            # Not registered if connect_ex failed at once.
            with contextlib.suppress(FileNotFoundError, ValueError):
                self.epoll.unregister(fd)
            client.sock.close()

    def expire_slow_handshakes(self, now: float) -> None:
        for client in list(self.clients.values()):
            waited = now - client.started
            if client.state in (CONNECTING, HANDSHAKING) and waited > self.args.connect_timeout:
                self.fail(client, "timeout")

    def connecting_done(self) -> bool:
        return self.launched == self.target and self.pending == 0

    def give_up_connecting(self) -> None:
        """Past the connect deadline: keep the connections that are open, drop the rest."""
        self.target = self.launched
        for client in list(self.clients.values()):
            if client.state in (CONNECTING, HANDSHAKING):
                self.fail(client, "connect deadline")

    # Reading ticks

    def on_readable(self, client: Client) -> None:
        try:
            data, ancillary, _, _ = client.sock.recvmsg(READ_SIZE, ANCILLARY_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            if client.state == OPEN:
                self.closed_by_server += 1
                self.drop(client)
            else:
                self.fail(client, errno.errorcode.get(error.errno or 0, str(error)))
            return
        read_ns = time.time_ns()
        if not data:
            if client.state == OPEN:
                self.closed_by_server += 1
                self.drop(client)
            else:
                self.fail(client, "closed during handshake")
            return
        if client.state == HANDSHAKING:
            self.on_handshake_data(client, data)
            return
        received_ns = kernel_time_ns(ancillary, read_ns)
        # The common case, one whole small text frame, skips the general parser.
        if not client.buffer and data[0] == 0x81 and data[1] == len(data) - 2:
            self.recorder.record(data[2:], received_ns, read_ns)
        else:
            self.on_frames(client, client.buffer + data, received_ns, read_ns)

    def on_frames(self, client: Client, data: bytes, received_ns: int, read_ns: int) -> None:
        frames, client.buffer = split_frames(data)
        for opcode, payload in frames:
            if opcode == OPCODE_TEXT:
                self.recorder.record(payload, received_ns, read_ns)
            elif opcode == OPCODE_CLOSE:
                self.closed_by_server += 1
                self.drop(client)
                return

    # Talking to fanout.py

    def on_command_input(self) -> None:
        chunk = os.read(self.stdin, 4096)
        if not chunk:
            self.running = False
            return
        self.command_buffer += chunk
        while b"\n" in self.command_buffer:
            line, self.command_buffer = self.command_buffer.split(b"\n", 1)
            self.run_command(line.decode().split())

    def run_command(self, words: list[str]) -> None:
        if words[:1] == ["report"] and len(words) == 3:
            first, last = int(words[1]), int(words[2])
            self.emit("report", open=self.open, ticks=self.recorder.report(first, last))
        elif words[:1] == ["quit"]:
            self.running = False

    def emit(self, event: str, **fields: object) -> None:
        fields.update(
            event=event,
            closed_by_server=self.closed_by_server,
            failed=self.failed,
        )
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()

    # The loop

    def run(self) -> None:
        deadline = self.started + self.args.max_seconds
        connect_deadline = self.started + self.args.connect_seconds
        next_expiry_check = self.started + 1.0
        while self.running:
            now = time.monotonic()
            if now > deadline:
                break
            if self.launched < self.target:
                self.launch_due_connections(now)
            if now > next_expiry_check:
                self.expire_slow_handshakes(now)
                next_expiry_check = now + 1.0
            if not self.announced and now > connect_deadline:
                self.give_up_connecting()
            if not self.announced and self.connecting_done():
                self.announced = True
                self.emit("connected", open=self.open, seconds=round(now - self.started, 3))
            timeout = 0.002 if self.launched < self.target else 0.25
            for fd, events in self.epoll.poll(timeout):
                self.dispatch(fd, events)
        self.close_all()

    def dispatch(self, fd: int, events: int) -> None:
        if fd == self.stdin:
            self.on_command_input()
            return
        client = self.clients.get(fd)
        if client is None:
            return
        if client.state == CONNECTING:
            self.on_connected(fd, client)
        elif events & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
            self.on_readable(client)

    def close_all(self) -> None:
        for client in list(self.clients.values()):
            self.drop(client)
        self.epoll.close()


# The other side: how fanout.py runs several load generators and reads their lags


class LoadGenerators:
    """``loadgen.py`` processes pinned to one CPU, sharing the clients and the rate.

    Each ends by its own deadlines, so a blocking read of its next line always returns.
    """

    def __init__(
        self,
        port: int,
        clients: int,
        *,
        interval: float,
        rate: float,
        per_process: int,
        max_seconds: float,
        cpu: int,
    ) -> None:
        count = math.ceil(clients / per_process)
        # Twice the time the rate allows, and some: a server that cannot keep up is left with
        # the clients it took by then.
        self.connect_seconds = clients / rate * 2 + 20
        self.processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    os.path.abspath(__file__),
                    f"--port={port}",
                    f"--clients={clients // count + (index < clients % count)}",
                    f"--interval={interval}",
                    f"--rate={rate / count}",
                    f"--id-prefix=g{index}",
                    f"--connect-seconds={self.connect_seconds}",
                    f"--max-seconds={max_seconds}",
                    f"--cpu={cpu}",
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for index in range(count)
        ]

    def read(self, event: str) -> list[dict[str, Any]]:
        """The next message of every generator, which must be ``event``."""
        messages = []
        for process in self.processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            message = json.loads(line) if line else {}
            if message.get("event") != event:
                raise RuntimeError(f"load generator {process.pid} ended without {event!r}")
            messages.append(message)
        return messages

    def send(self, command: str) -> None:
        for process in self.processes:
            if process.poll() is None:
                assert process.stdin is not None
                process.stdin.write(command + "\n")
                process.stdin.flush()

    def stop(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self.send("quit")
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return math.nan
    return sorted_values[max(1, math.ceil(fraction * len(sorted_values))) - 1]


def rounded(value: float, digits: int = 2) -> float | None:
    """``value`` rounded, or None (null in JSON, "-" in a table) if it is not a number."""
    return None if math.isnan(value) else round(value, digits)


def lag_figures(
    reports: list[dict[str, Any]], clients: int, first: int, last: int
) -> dict[str, Any]:
    """Lag percentiles over every (client, tick) and per tick, and the ticks never received."""
    all_lags: list[float] = []
    all_delays: list[float] = []
    per_tick = []
    for tick in range(first, last + 1):
        lags = sorted(lag / 1000 for r in reports for lag in r["ticks"][str(tick)]["lags_us"])
        all_lags.extend(lags)
        all_delays.extend(d / 1000 for r in reports for d in r["ticks"][str(tick)]["delays_us"])
        per_tick.append(
            {
                "tick": tick,
                "received": len(lags),
                "lag_ms_p50": rounded(percentile(lags, 0.5)),
                "lag_ms_p99": rounded(percentile(lags, 0.99)),
                "lag_ms_max": rounded(max(lags, default=math.nan)),
            }
        )
    all_lags.sort()
    all_delays.sort()
    return {
        "ticks": last - first + 1,
        "lag_ms_p50": rounded(percentile(all_lags, 0.5)),
        "lag_ms_p99": rounded(percentile(all_lags, 0.99)),
        "lag_ms_max": rounded(max(all_lags, default=math.nan)),
        "missed_ticks": sum(max(0, clients - tick["received"]) for tick in per_tick),
        "closed_by_server": sum(r["closed_by_server"] for r in reports),
        "read_delay_ms_p99": rounded(percentile(all_delays, 0.99)),
        "per_tick": per_tick,
    }


# Running one load generator


def raise_file_limit() -> None:
    """Lift this process's soft limit on open files to the hard one."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, required=True, help="connections to open")
    parser.add_argument("--interval", type=float, default=1.0, help="the server's tick interval")
    parser.add_argument("--rate", type=float, default=2000.0, help="connections per second")
    parser.add_argument("--max-pending", type=int, default=64, help="handshakes at once")
    parser.add_argument(
        "--connect-timeout", type=float, default=20.0, help="seconds for one connection"
    )
    parser.add_argument(
        "--connect-seconds", type=float, default=60.0, help="seconds to open them all, at most"
    )
    parser.add_argument("--id-prefix", default="c", help="client Ids are PREFIX-NUMBER")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="stop after this")
    parser.add_argument("--cpu", type=int, help="pin this process to this CPU")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    raise_file_limit()
    LoadGenerator(args).run()


if __name__ == "__main__":
    main()
