"""``POST /push``: a text to one client by its Id, or to every client, in one process."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from servers import ServerProcess, ServerTestCase, post_push
from support import TICK, recording_sends, server_text_frames
from tornado.testing import gen_test

import app
from timepush import fastpath

TOKEN = "push-token-5d0e"


class TestPush(ServerTestCase):
    app_settings = {"push_token": TOKEN}  # noqa: RUF012

    async def push(self, body: Any) -> tuple[int, str, Any]:
        return await post_push(self.get_url(""), body, TOKEN)

    @gen_test
    async def test_to_one(self) -> None:
        """A push by Id reaches that client only, between its ticks, and says it reached one."""
        target, other = await self.connect("target"), await self.connect("other")
        received, other_received = self.keep_reading(target), self.keep_reading(other)
        await self.wait_until(lambda: received and other_received)
        assert await self.push({"Id": "target", "message": "hello"}) == (200, "OK", {"reached": 1})
        await self.wait_until(lambda: "hello" in received)
        seen = len(other_received)
        await self.wait_until(lambda: len(other_received) > seen + 2)
        assert "hello" not in other_received
        assert (await self.stats())["pushed"] == 1

    @gen_test
    async def test_to_all(self) -> None:
        """A push without an Id reaches every client."""
        readers = [self.keep_reading(await self.connect(f"c{n}")) for n in range(3)]
        assert await self.push({"message": "to all"}) == (200, "OK", {"reached": 3})
        for received in readers:
            await self.wait_until(lambda received=received: "to all" in received)

    @gen_test
    async def test_written_like_a_tick(self) -> None:
        """A pushed text is written by the loop's thread as one frame, as ticks are."""
        received = self.keep_reading(await self.connect("target"))
        with recording_sends(self.get_http_port()) as sends:
            await self.push({"Id": "target", "message": "pushed"})
            await self.wait_until(lambda: "pushed" in received)
        assert fastpath.encode_text_frame("pushed") in [data for _, data in sends]
        assert "pushed" in server_text_frames(sends)
        assert {thread for thread, _ in sends} == {threading.get_ident()}


class TestSlowPush(ServerTestCase):
    interval = 60.0  # no tick during the test: what is skipped is a push
    app_settings = {"push_token": TOKEN}  # noqa: RUF012

    @gen_test
    async def test_skips_slow_client(self) -> None:
        """A client that has not read its last message is skipped, as for a tick: reached 0."""
        await self.raw_connect("slow", rcvbuf=4096)  # never reads
        big = "x" * 60_000
        # Pushes fill the socket's buffers until one is left queued; the next finds it unread.
        answers = []
        while len(answers) < 200 and (not answers or answers[-1][2]["reached"]):
            answers.append(await post_push(self.get_url(""), {"Id": "slow", "message": big}, TOKEN))
        assert answers[-1] == (200, "OK", {"reached": 0})
        # Counted as a skipped push, not as a skipped tick.
        assert app.stats.pushes_skipped_slow == 1
        assert app.stats.ticks_skipped_slow == 0


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """One server with PUSH_TOKEN set, for the refusals (they change nothing)."""
    process = ServerProcess(f"--interval={TICK}", env={"PUSH_TOKEN": TOKEN})
    yield process
    process.close()


TOO_BIG = {"message": "x" * (64 * 1024)}
NESTED_ID = b'{"Id": ' + b"[" * 30_000 + b"]" * 30_000 + b', "message": "hi"}'


@pytest.mark.parametrize(
    ("body", "headers", "token", "status", "reason"),
    [
        ({"message": "hi"}, {}, None, 401, "Missing or wrong token"),
        ({"message": "hi"}, {}, "wrong", 401, "Missing or wrong token"),
        ({"message": "hi"}, {}, TOKEN + "x", 401, "Missing or wrong token"),
        ({"message": "hi"}, {"Authorization": TOKEN}, None, 401, "Missing or wrong token"),
        (TOO_BIG, {}, TOKEN, 413, "Body over 65536 bytes"),
        (b"{not json", {}, TOKEN, 400, "Body is not JSON"),
        (b"\xff\xfe", {}, TOKEN, 400, "Body is not JSON"),
        (b"", {}, TOKEN, 400, "Body is not JSON"),
        (b"[" * 60_000, {}, TOKEN, 400, "Body nested too deeply"),
        (NESTED_ID, {}, TOKEN, 400, "Body nested too deeply"),
        (b'{"message": "\\ud800"}', {}, TOKEN, 400, '"message" has a lone surrogate'),
        (["hi"], {}, TOKEN, 400, 'Missing "message" (a string)'),
        ({"Id": "a"}, {}, TOKEN, 400, 'Missing "message" (a string)'),
        ({"message": 5}, {}, TOKEN, 400, 'Missing "message" (a string)'),
        ({"Id": 5, "message": "hi"}, {}, TOKEN, 400, '"Id" is not a valid Id'),
        ({"Id": "", "message": "hi"}, {}, TOKEN, 400, '"Id" is not a valid Id'),
        ({"Id": "x" * 65, "message": "hi"}, {}, TOKEN, 400, '"Id" is not a valid Id'),
        ({"Id": "nobody", "message": "hi"}, {}, TOKEN, 404, "No client with this Id is connected"),
    ],
)
def test_refused(
    server: ServerProcess,
    body: Any,
    headers: dict[str, str],
    token: str | None,
    status: int,
    reason: str,
) -> None:
    """Each bad push gets its status, a reason, and a JSON body saying the same."""
    answer = asyncio.run(post_push(server.url, body, token, headers))
    assert answer == (status, reason, {"error": reason})


def test_chunked_too_big(server: ServerProcess) -> None:
    """A body sent in chunks, without a length, is refused too once it passes 64 KiB."""

    async def chunked() -> tuple[int, str, Any]:
        async def producer(write: Any) -> None:
            for _ in range(20):
                await write(b"x" * 8192)

        from tornado.httpclient import AsyncHTTPClient

        response = await AsyncHTTPClient().fetch(
            server.url + "/push",
            method="POST",
            body_producer=producer,
            headers={"Authorization": f"Bearer {TOKEN}"},
            raise_error=False,
        )
        return response.code, response.reason, response.body

    assert asyncio.run(chunked())[:2] == (413, "Body over 65536 bytes")


def test_token_never_logged(server: ServerProcess) -> None:
    """Neither the token nor a wrong one appears in the log, whatever was sent."""
    asyncio.run(post_push(server.url, {"message": "hi"}, "a-wrong-token"))
    asyncio.run(post_push(server.url, {"message": "hi"}, TOKEN))
    server.wait_for_log(r"200 POST /push")
    assert TOKEN not in server.log and "a-wrong-token" not in server.log
    assert "Traceback" not in server.log


def test_off_without_token(start_server: Any) -> None:
    """Without PUSH_TOKEN the endpoint does not exist: 404, token or not."""
    server = start_server(env={"PUSH_TOKEN": ""})
    for token in (None, "", "anything"):
        status, _, _ = asyncio.run(post_push(server.url, {"message": "hi"}, token))
        assert status == 404
