"""``GET /clock``: the zone of the pushed time, which the pushed text itself leaves out.

The page asks it once, and again whenever a tick's time jumps (as at a daylight-saving change),
so the zone it shows stays right without a reload. This module imports nothing of the project.
"""

from __future__ import annotations

import datetime
import os
import zoneinfo

import tornado.web


class ClockHandler(tornado.web.RequestHandler):
    """The server's UTC offset and zone now, as JSON; worked out on every request."""

    def get(self) -> None:
        now = datetime.datetime.now().astimezone()
        offset = now.utcoffset() or datetime.timedelta()
        self.set_header("Cache-Control", "no-store")
        self.write(
            {
                "utc_offset_seconds": round(offset.total_seconds()),
                "abbreviation": now.tzname(),
                "zone": self.zone_name(now),
            }
        )

    @staticmethod
    def zone_name(now: datetime.datetime) -> str | None:
        """The IANA name of the local zone ("Asia/Shanghai"), from TZ or /etc/localtime."""
        setting = os.environ.get("TZ")
        if setting is None:
            try:
                setting = os.readlink("/etc/localtime")  # -> /usr/share/zoneinfo/Area/City
            except OSError:
                return None
        name = setting.lstrip(":").rpartition("zoneinfo/")[2]
        try:
            zone = zoneinfo.ZoneInfo(name)
        except (ValueError, OSError, zoneinfo.ZoneInfoNotFoundError):
            return None  # a POSIX rule such as "CST-8" names no zone
        # Trust the name only if it gives the offset this process is actually using.
        return name if now.astimezone(zone).utcoffset() == now.utcoffset() else None
