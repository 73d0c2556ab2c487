"""``/clock``: the zone of the pushed time, which the pushed text itself leaves out."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import time
from collections.abc import Iterator

import pytest
from servers import ServerTestCase
from tornado.testing import gen_test

from timepush import clock


@contextlib.contextmanager
def local_zone(tz: str | None) -> Iterator[None]:
    """Run the block with the process's TZ set to ``tz`` (None: unset), then put it back."""
    before = os.environ.get("TZ")
    try:
        set_zone(tz)
        yield
    finally:
        set_zone(before)


def set_zone(tz: str | None) -> None:
    """Set this process's TZ (None: unset it) and make the C library read it again."""
    if tz is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = tz
    time.tzset()


@pytest.mark.parametrize(
    "tz, name",
    [
        ("Asia/Shanghai", "Asia/Shanghai"),
        (":Europe/London", "Europe/London"),
        (":/usr/share/zoneinfo/America/New_York", "America/New_York"),
        ("CST-8", None),  # a POSIX rule: an offset and an abbreviation, but no zone
        ("Mars/Olympus", None),  # no such zone: the C library quietly uses UTC
        ("../../etc/passwd", None),
        ("", None),
    ],
)
def test_zone_name(tz, name):
    """The zone's IANA name comes from TZ when that names a zone, and is None otherwise."""
    with local_zone(tz):
        now = datetime.datetime.now().astimezone()
        assert clock.ClockHandler.zone_name(now) == name


def test_zone_name_from_localtime():
    """Without TZ the name comes from the zone file /etc/localtime links to."""
    try:
        target = os.readlink("/etc/localtime")
    except OSError:
        pytest.skip("/etc/localtime is not a link on this machine")
    with local_zone(None):
        now = datetime.datetime.now().astimezone()
        assert clock.ClockHandler.zone_name(now) == target.rpartition("zoneinfo/")[2]


class TestClock(ServerTestCase):
    async def clock(self) -> dict:
        response = await self.http_client.fetch(self.get_url("/clock"))
        self.assertEqual(response.headers["Cache-Control"], "no-store")
        return json.loads(response.body)

    @gen_test
    async def test_offset_follows_zone(self) -> None:
        """Each answer gives the offset in force then: a change shows without a restart."""
        # POSIX rules for a made-up zone: summer time all year round, then winter time only.
        with local_zone("XST0XDT,J1/0,J365/25"):
            summer = await self.clock()
        with local_zone("XST0"):
            winter = await self.clock()
        with local_zone("Asia/Shanghai"):
            shanghai = await self.clock()
        self.assertEqual(summer, {"utc_offset_seconds": 3600, "abbreviation": "XDT", "zone": None})
        self.assertEqual(winter, {"utc_offset_seconds": 0, "abbreviation": "XST", "zone": None})
        self.assertEqual(
            shanghai,
            {"utc_offset_seconds": 8 * 3600, "abbreviation": "CST", "zone": "Asia/Shanghai"},
        )

    @gen_test
    async def test_ticks_unchanged(self) -> None:
        """The ticks stay the article's text: the server's wall clock with no zone in it."""
        with local_zone("Asia/Shanghai"):
            connection = await self.connect("reader")
            # The last of three: the first may have been taken before the zone changed.
            text = (await self.read_ticks(connection, 3))[-1]
            expected = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=8)
        pushed = datetime.datetime.fromisoformat(text)
        self.assertIsNone(pushed.tzinfo)
        self.assertLess(abs(pushed - expected.replace(tzinfo=None)), datetime.timedelta(seconds=1))
