"""Several server processes, on one machine or many, sharing one Redis: the cluster engine.

``push.py`` uses this module only when the server is given ``--redis URL``. It hands a
``Cluster`` what it needs to act on this process's own clients (deliver a text to one or to all,
close one, read the local figures); this module imports nothing of the project.

What goes through Redis:

- A registry: one key per client ``Id`` whose value names its owner and when it connected,
  ``microseconds node#serial``, and one set per node of the Ids it holds. A new connection claims
  its Id with a script that keeps the newer of the two connections (by connection time; an
  owner whose node is gone counts for nothing) and, when it takes the Id from another node,
  appends a notice to that node's stream, in the same step. A connection that ends deletes the
  key only if it still holds its own value, so an older connection's goodbye never removes a
  newer one. Each of these costs one command; a node with no connection coming or going sends
  none about its clients.
- Streams: one per node for takeover notices, read from the last entry seen, so a notice written
  while the node's link was broken is read when it is back.
- Pub/sub: one channel per node (pushes to one client, replies, the node's echo) and one for
  everyone (pushes to all).
- A heartbeat: each node writes its figures under a key that expires after three rounds. The
  live keys make the ``cluster`` totals of ``/stats`` and the nodes a push waits for; a node whose
  key has expired is gone: its Ids count as free at once, and the first node to notice removes
  them. A node that finds its own key expired (it was stopped, or Redis lost it) registers its
  clients again.

Ticks never go through Redis: every process ticks on its own clock. When Redis is down, local
clients keep every tick; the node retries with a capped backoff, and when Redis is back it puts
its clients back in the registry, once, in batches; of two connections with one Id made on two
nodes meanwhile, the newer stays. When Redis is full, writes it refuses are tried again each
round. Anyone who can reach Redis can write to it: a message or a heartbeat entry that no node
wrote is skipped, never fatal.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio
import redis.asyncio.sentinel
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

log = logging.getLogger(__name__)

PREFIX = "time-push:"
BATCH = 500  # Ids per Redis round trip when claiming or releasing many
NOTICES_KEPT = 1000  # about how many takeover notices a node's stream keeps

# An owner value is "microseconds node#serial"; these scripts read the node out of it. A value
# they cannot read names no node: it counts as free.
# KEYS: the Id's key, this node's set of Ids. ARGV: prefix, Id, value, its time, this node,
# how many notices a stream keeps. Returns {1, previous value} when the Id is this connection's
# now, {0, holder's value} when a newer connection on a live node holds it.
CLAIM = """
local prefix, id, value, node = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local old = redis.call('GET', KEYS[1])
local holder
if old then
    local t, n = string.match(old, '^(%d+) (.-)#%d+$')
    if t and n ~= node and redis.call('EXISTS', prefix .. 'stats:' .. n) == 1 then
        t = tonumber(t)
        local time = tonumber(ARGV[4])
        if t > time or (t == time and old > value) then
            return {0, old}
        end
        holder = n
    end
end
redis.call('SET', KEYS[1], value)
redis.call('SADD', KEYS[2], id)
if holder then
    redis.call('XADD', prefix .. 'notices:' .. holder, 'MAXLEN', '~', ARGV[6], '*',
        'id', id, 'owner', old)
    redis.call('SREM', prefix .. 'ids:' .. holder, id)
end
return {1, old or false}
"""

# KEYS: the Id's key, this node's set of Ids. ARGV: the value, the Id; an empty value deletes
# any value of this node (ARGV[3]), for an Id that left while the link was down.
RELEASE = """
local old = redis.call('GET', KEYS[1])
if old and (old == ARGV[1] or (ARGV[1] == '' and
        string.match(old, '^%d+ (.-)#%d+$') == ARGV[3])) then
    redis.call('DEL', KEYS[1])
end
return redis.call('SREM', KEYS[2], ARGV[2])
"""

# KEYS: the Id's key. ARGV: prefix. The node that holds the Id, if it is live.
OWNER = """
local value = redis.call('GET', KEYS[1])
local n = value and string.match(value, '^%d+ (.-)#%d+$')
if n and redis.call('EXISTS', ARGV[1] .. 'stats:' .. n) == 1 then
    return n
end
return false
"""

# Remove up to ARGV[3] Ids of the gone node ARGV[2] (KEYS: its heartbeat key and its set of Ids;
# ARGV[1]: prefix). Returns how many it took from the set; -1 if the node is back meanwhile.
SWEEP = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    return -1
end
local ids = redis.call('SPOP', KEYS[2], ARGV[3])
for _, id in ipairs(ids) do
    local key = ARGV[1] .. 'id:' .. id
    local value = redis.call('GET', key)
    if value and string.match(value, '^%d+ (.-)#%d+$') == ARGV[2] then
        redis.call('DEL', key)
    end
end
return #ids
"""

SCRIPTS = {"claim": CLAIM, "release": RELEASE, "owner": OWNER, "sweep": SWEEP}

# Errors that mean "the link to Redis is not working"; anything else is a bug and is logged.
LINK_ERRORS = (redis.exceptions.RedisError, OSError, asyncio.TimeoutError)

# Far above any message a node sends: a push's text is at most 64 KiB, and six times that once
# escaped as JSON. Anything longer is not read at all.
MAX_MESSAGE_BYTES = 1024 * 1024
MAX_FIGURES_BYTES = 64 * 1024  # a node's heartbeat takes a few hundred


class SubscriptionStalled(Exception):
    """The node's own echo did not come back: the subscription stopped delivering."""


def refused_for_memory(results: list[Any]) -> list[bool]:
    """Which commands of a pipeline a full Redis refused; any other error is raised."""
    for result in results:
        if isinstance(result, Exception) and not isinstance(
            result, redis.exceptions.OutOfMemoryError
        ):
            raise result
    return [isinstance(result, Exception) for result in results]


SENTINEL = "redis+sentinel"
SENTINEL_FORM = "redis+sentinel://[:password@]host:port[,host:port...]/service_name[/db]"


def sentinel_address(url: str) -> tuple[list[tuple[str, int]], str, int, str | None]:
    """The Sentinels, service name, database and password of a ``redis+sentinel://`` URL.

    redis-py does not read such a URL. The password, if any, is the primary's; the Sentinels
    are asked without one. Raises ValueError saying what is wrong.
    """
    scheme, separator, rest = url.partition("://")
    if scheme != SENTINEL or not separator:
        raise ValueError(f"not {SENTINEL}://")
    if "?" in rest or "#" in rest:
        raise ValueError("no query or fragment is read")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    password = unquote(userinfo.partition(":")[2]) or None if at else None
    sentinels = []
    for one in hosts.split(","):
        host, colon, port = one.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"a Sentinel is not host:port: {one!r}")
        sentinels.append((host.removeprefix("[").removesuffix("]"), int(port)))
    service, _, db = path.partition("/")
    db = db.removesuffix("/") or "0"
    if not service:
        raise ValueError("no service name")
    if not db.isdigit():
        raise ValueError(f"the database is not a number: {db!r}")
    return sentinels, unquote(service), int(db), password


def safe_url(url: str) -> str:
    """The Redis URL without its password, for the log and ``/stats``."""
    if url.startswith(SENTINEL + "://"):
        sentinels, service, db, _ = sentinel_address(url)
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in sentinels)
        return f"{SENTINEL}://{hosts}/{service}/{db}"
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    return f"{parts.scheme}://{host}:{parts.port or 6379}{parts.path}"


def url_problem(url: str) -> str | None:
    """Say what is wrong with a Redis URL or a Sentinel one, or return None."""
    if url.startswith(SENTINEL + ":"):
        try:
            sentinel_address(url)
        except ValueError as error:
            return f"not a Sentinel URL ({SENTINEL_FORM}): {error}"
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError as error:
        return f"not a URL: {error}"
    if parts.scheme not in ("redis", "rediss", "unix"):
        return f"not a Redis URL (redis://host:port/db, or {SENTINEL_FORM}): {url!r}"
    return None


class BlockingSentinelPool(
    redis.asyncio.sentinel.SentinelConnectionPool, redis.asyncio.BlockingConnectionPool
):
    """Connections to the primary that Sentinel names, at most ``max_connections`` of them:
    one more waits for a free one, as with ``BlockingConnectionPool``."""

    async def get_master_address(self) -> tuple[str, int]:
        # Asked for each new connection. Just after a failover Sentinel may name no primary for
        # a moment: the one found at the start of the session is still the best guess (if it
        # is wrong, the connection fails and the session starts over, asking again).
        try:
            return await super().get_master_address()
        except redis.asyncio.sentinel.MasterNotFoundError:
            if self.master_address is None:
                raise
            return self.master_address


def add_up(figures: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum numbers and dicts of numbers, key by key."""
    total: dict[str, Any] = {}
    for one in figures:
        for name, value in one.items():
            if isinstance(value, dict):
                total.setdefault(name, collections.Counter()).update(value)
            elif isinstance(value, (int, float)):
                total[name] = total.get(name, 0) + value
    return {
        name: dict(value) if isinstance(value, dict) else value for name, value in total.items()
    }


def sendable(value: Any) -> bool:
    """A text that can go out in a WebSocket frame (not a lone surrogate)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_text(value: Any) -> bool:
    return isinstance(value, str)


def is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_reached(value: Any) -> bool:
    return value is None or is_count(value)


# What each operation carries, and what each field must be.
MESSAGES: dict[str, dict[str, Callable[[Any], bool]]] = {
    "echo": {},
    "push": {"from": is_text, "request": is_count, "text": sendable},
    "reply": {"from": is_text, "request": is_count, "reached": is_reached},
}


def parse(data: bytes) -> dict[str, Any] | None:
    """A message from another node, or None for anything no node sends.

    Anyone who can reach Redis can publish, so the size is bounded before parsing, and
    nesting too deep for the parser is refused like any other bad JSON.
    """
    if len(data) > MAX_MESSAGE_BYTES:
        return None
    try:
        message = json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError included
        return None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        return None
    fields = MESSAGES.get(message["op"])
    if fields is None:
        return None
    if message["op"] == "push" and "id" in message:
        fields = {**fields, "id": is_text}
    if all(name in message and valid(message[name]) for name, valid in fields.items()):
        return message
    return None


def is_figure(value: Any) -> bool:
    """A count a node reports: a number from 0 to 2**53 (NaN and infinities fail the test)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 2**53


def read_figures(value: str) -> dict[str, Any] | None:
    """A node's heartbeat figures, or None for an entry no node writes.

    Each figure is a count or a dict of counts; no field may be called ``nodes``, the name of
    the list that the totals carry.
    """
    if len(value) > MAX_FIGURES_BYTES:
        return None
    try:
        figures = json.loads(value)
    except (ValueError, RecursionError):
        return None
    if not isinstance(figures, dict) or "nodes" in figures:
        return None
    for figure in figures.values():
        counts = figure.values() if isinstance(figure, dict) else [figure]
        if not all(is_figure(count) for count in counts):
            return None
    return figures


class Cluster:
    """This process as one node of a cluster that shares a Redis.

    ``deliver(client_id, text)`` and ``deliver_all(text)`` write to local clients and return how
    many got the text; ``close(client_id, code, reason)`` closes a local client; ``takeover`` is
    the (code, reason) it closes a replaced client with; ``local_stats()`` returns this node's
    figures (numbers, or dicts of numbers). All of them run on the loop's thread, as does every
    method here. ``interval`` is the time between rounds (heartbeat, echo).
    """

    def __init__(
        self,
        url: str,
        *,
        node: str,
        deliver: Callable[[str, str], int],
        deliver_all: Callable[[str], int],
        close: Callable[[str, int, str], None],
        takeover: tuple[int, str],
        local_stats: Callable[[], dict[str, Any]],
        interval: float = 1.0,
    ) -> None:
        self.url = url
        self.node = node
        self.deliver = deliver
        self.deliver_all = deliver_all
        self.close = close
        self.takeover = takeover
        self.local_stats = local_stats
        self.interval = interval
        self.timeout = max(1.0, 3 * interval)  # for one Redis command, or a reply
        self.node_ttl_ms = max(100, int(3_000 * interval))
        self.backoff = (interval / 4, 5 * interval)  # first and longest wait between attempts
        self.stall_after = max(0.5, 5 * interval)

        self.owners: dict[str, str] = {}  # local Id -> its owner value in the registry
        self.serial = itertools.count(1)
        self.scripts: dict[str, str] = {}  # name -> SHA1 of the script loaded in this Redis
        self.notices_seen: str | None = None  # the id of the last notice read from our stream
        self.sweeps: set[asyncio.Task[None]] = set()
        self.pending: collections.deque[tuple[str, str, str]] = collections.deque()
        self.wake = asyncio.Event()
        self.replies: dict[int, tuple[dict[str, int | None], asyncio.Event]] = {}
        self.requests = itertools.count(1)
        self.redis: redis.asyncio.Redis | None = None
        self.pubsub: Any = None
        self.up = False
        self.ever_up = False
        self.echo_since: float | None = None
        self.totals: dict[str, Any] | None = None
        self.ignored = 0  # messages from Redis that no node sends
        self.full = False  # Redis refuses writes for want of memory
        self.task: asyncio.Task[None] | None = None
        self.sentinel: redis.asyncio.sentinel.Sentinel | None = None
        self.server: str | None = None  # host:port of the Redis last talked to

    # -- called by push.py -----------------------------------------------------------------

    def start(self) -> None:
        """Start keeping the link to Redis in the background."""
        self.task = asyncio.ensure_future(self.run())

    async def stop(self) -> None:
        """Leave the cluster: send the last releases, remove this node's heartbeat, hang up."""
        client = self.redis
        if self.up and client is not None:
            deadline = time.monotonic() + self.timeout
            while self.pending and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await self.quietly(self.forget_node(client))  # or it expires by itself
        if self.task is not None:
            # redis-py can lose a cancel (PubSub.subscribe returns as if none had come), and the
            # session would then serve on: cancel again until the task has ended.
            while not self.task.done():
                self.task.cancel()
                await asyncio.wait([self.task], timeout=self.interval)
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def claim(self, client_id: str) -> None:
        """A local connection took ``client_id``: make it the owner everywhere."""
        # When it connected decides which of two connections stays: the clocks of the
        # machines must agree (NTP), as they must for the ticks.
        owner = f"{time.time_ns() // 1000} {self.node}#{next(self.serial)}"
        self.owners[client_id] = owner
        self.queue("claim", client_id, owner)

    def release(self, client_id: str) -> None:
        """The local connection that owned ``client_id`` ended."""
        owner = self.owners.pop(client_id, None)
        if owner is not None:
            self.queue("release", client_id, owner)

    async def push(self, client_id: str | None, text: str) -> tuple[int | None, list[str]]:
        """Send ``text`` to the client with this Id (or to all) on any node.

        Returns how many got it and the nodes that did not answer in time (they may have
        delivered it too). How many is None when the Id is connected nowhere, or when its node
        did not answer. Raises the builtin ``ConnectionError`` when the client is not local and
        Redis is out of reach or fails during the push; a push to all then reaches the local
        clients only.
        """
        if client_id is not None and client_id in self.owners:
            return self.deliver(client_id, text), []
        if client_id is None:
            reached = self.deliver_all(text)
            # The live nodes as the last heartbeat round saw them (while down, the last known).
            others = [node for node in (self.totals or {}).get("nodes", []) if node != self.node]
            if not self.up:
                return reached, others
            if not others:
                return reached, []
            try:
                message = {"op": "push", "text": text}
                more, unanswered = await self.ask(PREFIX + "all", message, others)
            except LINK_ERRORS:
                return reached, others  # the session ends and says so in the log
            return reached + (more or 0), unanswered
        if not self.up or self.redis is None:
            raise ConnectionError("no link to Redis")
        try:
            node = await self.script(self.redis, "owner", [PREFIX + "id:" + client_id], [PREFIX])
            if node is None or node == self.node:  # nowhere, on a gone node, or gone from here
                return None, []
            message = {"op": "push", "id": client_id, "text": text}
            return await self.ask(PREFIX + "node:" + node, message, [node])
        except LINK_ERRORS as error:
            # redis-py's own ConnectionError and TimeoutError are not the builtin ones.
            raise ConnectionError("Redis failed during a push") from error

    def stats(self) -> dict[str, Any]:
        """What ``/stats`` adds: the link's state and the totals over the live nodes."""
        return {
            "redis": "up" if self.up else "down",
            "redis_url": safe_url(self.url),
            "redis_server": self.server if self.up else None,
            "cluster": self.totals if self.up else None,
            "cluster_messages_ignored": self.ignored,
        }

    # -- the link ----------------------------------------------------------------------------

    def queue(self, op: str, client_id: str, owner: str) -> None:
        # While Redis is down nothing is queued, so memory stays bounded: once the link is
        # back, every local client is claimed again and what left meanwhile is released.
        if self.up:
            self.pending.append((op, client_id, owner))
            self.wake.set()

    def register_all(self) -> None:
        """Claim every local client again, in the order they connected (in batches)."""
        for client_id, owner in self.owners.items():
            self.queue("claim", client_id, owner)

    async def run(self) -> None:
        """Keep a session with Redis going; after a failure, wait (longer each time) and retry."""
        delay = self.backoff[0]
        try:
            while True:
                started = time.monotonic()
                try:
                    await self.session()
                except (*LINK_ERRORS, SubscriptionStalled) as error:
                    self.link_lost(error)
                except Exception:
                    log.exception("Cluster link failed")
                    self.link_lost(None)
                if time.monotonic() - started > 10 * self.backoff[1]:
                    delay = self.backoff[0]  # it had worked for a while: start over quickly
                await asyncio.sleep(delay)
                delay = min(2 * delay, self.backoff[1])
        finally:
            self.up = False

    def link_lost(self, error: BaseException | None) -> None:
        if isinstance(error, SubscriptionStalled):
            log.warning("Redis subscription stopped delivering; rebuilding it")
        elif self.up or not self.ever_up:
            log.warning(
                "Redis at %s out of reach (%s); local clients keep their ticks, retrying",
                self.where(),
                type(error).__name__ if error else "error",
            )
            self.ever_up = True  # one warning until the link is back
        self.up = False
        self.pending.clear()  # every local client is claimed again once Redis is back
        for _, arrived in self.replies.values():
            arrived.set()  # nobody waits for replies that will not come

    def connect(self, connections: int, decode: bool) -> redis.asyncio.Redis:
        options = {
            "max_connections": connections,
            "timeout": self.timeout,
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            "retry": Retry(NoBackoff(), 0),  # this class does the retrying
            "decode_responses": decode,
            "client_name": PREFIX + self.node,  # CLIENT LIST tells which node a link is
            # Anyone can write to Redis: bytes that are not UTF-8 must not raise halfway
            # through a reply. They fail the checks on what was read instead.
            "encoding_errors": "replace",
        }
        if self.sentinel is None:
            pool = redis.asyncio.BlockingConnectionPool.from_url(self.url, **options)
            return redis.asyncio.Redis.from_pool(pool)
        _, service, db, password = sentinel_address(self.url)
        return self.sentinel.master_for(
            service,
            connection_pool_class=BlockingSentinelPool,
            db=db,
            password=password,
            **options,
        )

    def where(self) -> str:
        """Which Redis, for the log: the URL without its password, and Sentinel's primary."""
        if self.sentinel is None or self.server is None:
            return safe_url(self.url)
        return f"{self.server} (primary of {safe_url(self.url)})"

    def ask_sentinel(self) -> redis.asyncio.sentinel.Sentinel | None:
        """Sentinel clients for a session, or None for a plain Redis URL."""
        if not self.url.startswith(SENTINEL + "://"):
            return None
        sentinels, _, _, _ = sentinel_address(self.url)
        timeouts = {"socket_timeout": self.timeout, "socket_connect_timeout": self.timeout}
        return redis.asyncio.sentinel.Sentinel(sentinels, sentinel_kwargs=timeouts)

    async def find_server(self) -> str:
        """host:port of the Redis this node talks to: with Sentinel, the primary it names."""
        if self.sentinel is None:
            parts = urlsplit(self.url)
            if parts.scheme == "unix":
                return parts.path
            return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
        _, service, _, _ = sentinel_address(self.url)
        host, port = await self.sentinel.discover_master(service)
        return f"{host}:{port}"

    async def session(self) -> None:
        self.sentinel = self.ask_sentinel()
        client = self.connect(8, decode=True)
        # Messages arrive as bytes: one that is not UTF-8 is ignored like any other bad one,
        # where decoding it in the client would raise in the middle of reading the reply.
        listener = self.connect(1, decode=False)
        reader = self.connect(1, decode=True)  # its XREAD BLOCK holds the connection
        pubsub = listener.pubsub()
        tasks: list[asyncio.Task[None]] = []
        try:
            await client.ping()
            server = await self.find_server()
            if self.server not in (None, server):
                log.warning(
                    "Redis moved: Sentinel names %s as the primary (was %s)", server, self.server
                )
            self.server = server
            for name, source in SCRIPTS.items():
                self.scripts[name] = await client.script_load(source)
            await pubsub.subscribe(PREFIX + "node:" + self.node, PREFIX + "all")
            await self.find_notices(client)
            self.redis, self.pubsub = client, pubsub
            was_down = self.ever_up
            self.up = self.ever_up = True
            self.echo_since = None
            await self.heartbeat(client)  # first, so that other nodes take this one as live
            self.register_all()
            if was_down:
                log.info(
                    "Redis at %s is back; registering %d clients again",
                    self.where(),
                    len(self.owners),
                )
            else:
                log.info("Node %s joined the cluster at %s", self.node, self.where())
            tasks = [
                asyncio.ensure_future(self.listen(pubsub)),
                asyncio.ensure_future(self.write_pending(client)),
                asyncio.ensure_future(self.rounds(client)),
                asyncio.ensure_future(self.read_notices(reader)),
                asyncio.ensure_future(self.release_leftovers(client)),
            ]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # raises what ended the session
        finally:
            self.redis = None
            for task in (*tasks, *self.sweeps):
                task.cancel()
            await asyncio.gather(*tasks, *self.sweeps, return_exceptions=True)
            await self.quietly(pubsub.aclose())
            for connections in (listener, reader, client):
                await self.quietly(connections.aclose())
            for sentinel in self.sentinel.sentinels if self.sentinel is not None else []:
                await self.quietly(sentinel.aclose())

    async def script(
        self, client: redis.asyncio.Redis, name: str, keys: list[str], args: list[Any]
    ) -> Any:
        return await client.evalsha(self.scripts[name], len(keys), *keys, *args)

    async def find_notices(self, client: redis.asyncio.Redis) -> None:
        """Where to read this node's stream of takeover notices from: where it stopped."""
        key = PREFIX + "notices:" + self.node
        kind = await client.type(key)
        if kind != "stream":
            if kind != "none":
                await client.delete(key)  # not ours, though it has our name
            self.notices_seen = "0-0"  # Redis lost it (restarted), or a first start
        elif self.notices_seen is None:
            # A node of the same name before this process: its notices are not for us.
            last = await client.xrevrange(key, count=1)
            self.notices_seen = last[0][0] if last else "0-0"

    async def forget_node(self, client: redis.asyncio.Redis) -> None:
        # The node stays in the set of nodes: the next node to find it gone removes any Ids
        # whose release did not make it.
        await client.delete(PREFIX + "stats:" + self.node, PREFIX + "notices:" + self.node)

    async def quietly(self, closing: Awaitable[Any]) -> None:
        with contextlib.suppress(LINK_ERRORS):
            await asyncio.wait_for(closing, self.timeout)

    # -- the three tasks of a session ---------------------------------------------------------

    async def listen(self, pubsub: Any) -> None:
        while True:
            message = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=self.interval
            )
            if message is not None:
                await self.handle(message["data"])

    async def handle(self, data: bytes) -> None:
        message = parse(data)
        if message is None:
            # Anyone who can reach Redis can publish: a stranger's message must not stop us.
            self.ignored += 1
            log.warning(
                "Ignored a cluster message that is not ours (%d bytes): %r", len(data), data[:60]
            )
        else:
            await self.dispatch(message)

    async def dispatch(self, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "echo":
            self.echo_since = None
        elif op == "push" and message.get("from") != self.node:
            if "id" in message:
                # None: the client has gone from here since the asker looked it up.
                found = message["id"] in self.owners
                reached = self.deliver(message["id"], message["text"]) if found else None
            else:
                reached = self.deliver_all(message["text"])
            reply = {
                "op": "reply",
                "from": self.node,
                "request": message["request"],
                "reached": reached,
            }
            await self.publish(PREFIX + "node:" + message["from"], reply)
        elif op == "reply" and message["request"] in self.replies:
            replies, arrived = self.replies[message["request"]]
            replies[message["from"]] = message["reached"]
            arrived.set()

    async def write_pending(self, client: redis.asyncio.Redis) -> None:
        """Send queued claims and releases in order, many per round trip, until each lands."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.pending:
                batch = [self.pending.popleft() for _ in range(min(BATCH, len(self.pending)))]
                try:
                    refused = await self.write(client, batch)
                except BaseException:
                    self.pending.extendleft(reversed(batch))  # claimed again once the link is back
                    raise
                if refused:
                    self.pending.extendleft(reversed(refused))
                    break  # Redis is full: the next round tries again

    async def write(
        self, client: redis.asyncio.Redis, batch: list[tuple[str, str, str]]
    ) -> list[tuple[str, str, str]]:
        """Claim and release Ids, one script each, in one round trip; close a local connection
        that a newer one on another node holds the Id from.

        Returns what a full Redis refused and is still worth writing.
        """
        pipe = client.pipeline(transaction=False)
        mine = PREFIX + "ids:" + self.node
        for op, client_id, owner in batch:
            if op == "claim":
                when = owner.partition(" ")[0]
                args = [PREFIX, client_id, owner, when, self.node, NOTICES_KEPT]
            else:
                args = [owner, client_id, self.node]
            keys = [PREFIX + "id:" + client_id, mine]
            pipe.evalsha(self.scripts[op], len(keys), *keys, *args)
        results = await pipe.execute(raise_on_error=False)
        refused = refused_for_memory(results)
        if any(op == "claim" for op, _, _ in batch):
            self.say_full(any(refused))
        for (op, client_id, owner), result, no in zip(batch, results, refused):
            lost = op == "claim" and not no and isinstance(result, list) and result[:1] == [0]
            if lost and self.owners.get(client_id) == owner:
                holder = str(result[1]).partition(" ")[2].rpartition("#")[0]
                log.info("Client %r has a newer connection on %s", client_id, holder)
                self.close(client_id, *self.takeover)
        # A claim refused for a connection that has ended since is dropped.
        return [
            entry
            for entry, no in zip(batch, refused)
            if no and (entry[0] == "release" or self.owners.get(entry[1]) == entry[2])
        ]

    def say_full(self, full: bool) -> None:
        """Say once that Redis refuses writes for want of memory, and once that it takes them."""
        if full and not self.full:
            log.warning(
                "Redis at %s is full (out of memory, at its maxmemory): writes are refused, "
                "retried each round; local clients keep their ticks",
                self.where(),
            )
        elif self.full and not full:
            log.info("Redis at %s takes writes again", self.where())
        self.full = full

    async def rounds(self, client: redis.asyncio.Redis) -> None:
        """Each interval: write the heartbeat, add up the nodes, send the echo.

        The same few commands at ten clients or ten thousand: nothing here is per client.
        """
        while True:
            await asyncio.sleep(self.interval)
            if await self.heartbeat(client):
                log.warning(
                    "This node's heartbeat in Redis had expired (the node was stopped, or Redis "
                    "lost it): registering its %d clients again",
                    len(self.owners),
                )
                self.register_all()
            if self.pending:
                self.wake.set()  # what a full Redis refused, once more
            now = time.monotonic()
            if self.echo_since is None:
                self.echo_since = now
                await self.publish(PREFIX + "node:" + self.node, {"op": "echo"})
            elif now - self.echo_since > self.stall_after:
                raise SubscriptionStalled

    async def read_notices(self, reader: redis.asyncio.Redis) -> None:
        """Close the local connections that newer ones on other nodes took over."""
        key = PREFIX + "notices:" + self.node
        block = max(1, round(1000 * self.interval))
        while True:
            streams = await reader.xread({key: self.notices_seen}, count=BATCH, block=block)
            for _, entries in streams or []:
                for entry, fields in entries:
                    self.notices_seen = entry
                    self.take_notice(fields)

    def take_notice(self, fields: Any) -> None:
        client_id, owner = (fields.get(name) for name in ("id", "owner"))
        if not isinstance(client_id, str) or not isinstance(owner, str):
            self.ignored += 1
            log.warning("Ignored a takeover notice that is not ours: %r", str(fields)[:60])
        elif self.owners.get(client_id) == owner:
            # Only the connection that was replaced: the Id may have a newer one here by now.
            log.info("Client %r taken over on another node", client_id)
            self.close(client_id, *self.takeover)

    async def release_leftovers(self, client: redis.asyncio.Redis) -> None:
        """Release the Ids registered here whose connection ended while the link was down."""
        async for client_id in client.sscan_iter(PREFIX + "ids:" + self.node, count=BATCH):
            if client_id not in self.owners:
                self.queue("release", client_id, "")

    async def heartbeat(self, client: redis.asyncio.Redis) -> bool:
        """Write this node's figures, add up the live nodes', sweep the Ids of gone ones.

        Returns whether this node's own entry had expired.
        """
        nodes_key = PREFIX + "nodes"
        figures = json.dumps(self.local_stats())
        pipe = client.pipeline(transaction=False)
        pipe.set(PREFIX + "stats:" + self.node, figures, px=self.node_ttl_ms, get=True)
        pipe.sadd(nodes_key, self.node)
        pipe.smembers(nodes_key)
        results = await pipe.execute(raise_on_error=False)
        refused = refused_for_memory(results)
        self.say_full(any(refused))
        names = sorted(results[-1])
        values = await client.mget([PREFIX + "stats:" + name for name in names])
        live, gone, bad = [], [], []
        for name, value in zip(names, values):
            figures = None if value is None else read_figures(value)
            if figures is not None:
                live.append((name, figures))
            elif name != self.node:
                (gone if value is None else bad).append(name)
        if gone or bad:
            pipe = client.pipeline(transaction=False)
            for name in gone:
                pipe.srem(nodes_key, name)
            for name in bad:
                # Not a node's entry: left out of the totals, and left to expire.
                pipe.srem(nodes_key, name)
                pipe.pexpire(PREFIX + "stats:" + name, self.node_ttl_ms)
            removed = await pipe.execute()
            for name, count in zip(gone, removed):
                if count == 1:  # this node removed it, so this node sweeps its Ids
                    self.start_sweep(client, name)
        if bad:
            log.warning(
                "Skipped %d heartbeat entries that no node writes, such as %r",
                len(bad),
                bad[0][:60],
            )
        self.totals = {"nodes": [name for name, _ in live], **add_up([f for _, f in live])}
        return not refused[0] and results[0] is None

    def start_sweep(self, client: redis.asyncio.Redis, node: str) -> None:
        task = asyncio.ensure_future(self.sweep(client, node))
        self.sweeps.add(task)
        task.add_done_callback(self.sweeps.discard)

    async def sweep(self, client: redis.asyncio.Redis, node: str) -> None:
        """Remove the Ids of a gone node, a batch at a time, unless it comes back meanwhile."""
        keys = [PREFIX + "stats:" + node, PREFIX + "ids:" + node]
        with contextlib.suppress(*LINK_ERRORS):  # what is left stays free: its node is gone
            while (taken := await self.script(client, "sweep", keys, [PREFIX, node, BATCH])) > 0:
                pass
            if taken == 0:
                await client.delete(PREFIX + "notices:" + node)
                log.info("Node %s is gone; its Ids are free", node)

    async def publish(self, channel: str, message: dict[str, Any]) -> int:
        if self.redis is None:
            return 0
        return await self.redis.publish(channel, json.dumps(message))

    async def ask(
        self, channel: str, message: dict[str, Any], nodes: list[str]
    ) -> tuple[int | None, list[str]]:
        """Publish a push and add up the replies of ``nodes``, the live nodes it is for.

        Whoever else listens on the channel is never waited for. Returns the sum (None when no
        node answered with a number: the client was not there) and the nodes that did not
        answer in time.
        """
        request = next(self.requests)
        replies: dict[str, int | None] = {}
        arrived = asyncio.Event()
        self.replies[request] = replies, arrived
        try:
            await self.publish(channel, {**message, "from": self.node, "request": request})
            deadline = time.monotonic() + self.timeout
            while not replies.keys() >= set(nodes) and self.up:
                arrived.clear()
                try:
                    await asyncio.wait_for(arrived.wait(), deadline - time.monotonic())
                except asyncio.TimeoutError:
                    break
            found = [reached for reached in replies.values() if reached is not None]
            unanswered = [node for node in nodes if node not in replies]
            return (sum(found) if found else None), unanswered
        finally:
            del self.replies[request]
