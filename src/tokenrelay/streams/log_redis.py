"""The stream log in Redis, so that any replica can serve, resume or cancel any stream.

Keys, per stream (the `{id}` hash tag keeps one stream's keys on one Redis Cluster slot):

    tr:{id}:events   a Redis Stream; entry id `0-<seq>`, fields t (type) and d (JSON payload),
                     so a subscriber's cursor is exactly an XREAD id
    tr:{id}:meta     hash: model, owner, created_at, ended
    tr:{id}:lease    set by the producing replica and refreshed while it generates
    tr:{id}:tomb     outlives the stream for another TTL, so a late resume is 410, not 404
    tr:{id}:subs     hash: how many subscribers each replica has reading the stream
    tr:{id}:handoff  what another replica needs to take the stream over if its producer dies
                     (streams/handoff.py; only with on_producer_lost = "continue")

Every key expires: at creation after `max_age` (the longest a stream can run, plus its TTL),
and at the terminal event after `ttl`. A replica that dies mid-stream leaks nothing.

Readers on the producing replica follow from memory (`_Local`): the writer hands each batch
to them once Redis has acknowledged it, so an event reaches a local client only when any
replica could replay it too (the guarantee; tests/server/test_replicas.py checks it), at the
price of at most GATHER plus one round trip. The replica keeps each stream's last TAIL events,
so a reader that has just replayed from Redis attaches without reading again. Readers
elsewhere wait with `XREAD BLOCK`, woken by the producer's XADD: no polling. The followers of
a stream on another replica (`attach`) share one such reader, a task that hands each event to
all of them: one blocked connection per stream and replica, not per client. A read that finds
nothing new asks `status()`, which also notices a producer whose lease has lapsed and writes
the ending it never wrote (`producer_lost`, retryable) in one atomic script, so that every
reader sees the same single terminal event.

The producer does not wait for Redis: `append` checks and queues the event, and the replica's
one writer (`_write`) puts every stream's waiting events into one script call (`_APPEND`), one
round trip, after waiting GATHER for the rest of the replica's streams to join it. Only the
terminal append waits, so an ending is durable before its producer finishes. Size and sequence
checks are local to the producing replica, which is the only writer. What each step bought,
measured with bench_log --paced 50, is in docs/performance.md.

An outage (Redis restarting, failing over, gone) is one state, logged once when it begins and
once when it ends (`_Health`), never once per token. From the first failed call, `create`
refuses (`StoreUnavailable`: a 503 with Retry-After). Streams under way ride it out for
`grace` seconds: the writer keeps their events and retries, readers retry their reads. If
Redis is back by then with its data, nothing was lost or doubled (a failover that lost
acknowledged writes leaves a gap, which is not detected: docs/replicas.md). If not, the
producer's next append raises `StoreUnavailable` (its stream ends: the upstream is closed,
and no terminal event can be stored), and readers get theirs, which the response turns into
a retryable terminal `error`.

Cancellation never lands inside redis-py. Its asyncio pool holds one pool-wide lock while a
released connection disconnects, and a command cut by a cancel can leave that pending: every
Redis call in the process then queues behind it (seen here with redis-py 8.1, a reader
cancelled in XREAD BLOCK). So each call runs in a task of its own that the caller awaits
through `asyncio.shield`. A cancelled caller returns at once; the call finishes normally (an
XREAD BLOCK within READ_SLICE) and gives its connection back cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
import redis.exceptions

from tokenrelay.errors import (
    StoreUnavailable,
    StreamExpired,
    StreamTooLarge,
    UnknownStream,
    client_message,
)
from tokenrelay.events import Event, EventType, error_event
from tokenrelay.streams.log import (
    Follower,
    StreamLog,
    StreamMeta,
    StreamStatus,
    follower_failed,
    hand_over,
)

T = TypeVar("T")
RedisClient = aioredis.Redis | aioredis.RedisCluster  # one server, or a cluster
logger = logging.getLogger("tokenrelay.redis")
READ_SLICE = 0.5  # seconds: the longest one XREAD BLOCK waits (see read)
PRODUCER_LOST = "producer_lost"
CONTROL_CHANNEL = "tr:control"
TAIL = 64  # events a producing replica keeps of each stream for its readers (see _Local)
GATHER = 0.001  # seconds a write waits for more events, so that a round trip carries many
RETRY_PAUSE = 0.25  # seconds between tries while Redis is unreachable
FAIL_FAST = 1.0  # seconds after a failure in which new streams are refused without a try
# What a Redis that cannot serve us raises: unreachable (refused, reset, timed out), still
# loading its data, a replica a failover has not yet promoted, refusing writes (out of
# memory, a failed save). Any of these is an outage to ride out, then StoreUnavailable.
# A cluster that cannot be reached raises RedisClusterException, which is no RedisError.
UNAVAILABLE = (redis.exceptions.RedisError, redis.exceptions.RedisClusterException, OSError)

# Ends a stream whose producer's lease lapsed, unless it has ended or the lease is back, or,
# asked by a replica that takes streams over (ARGV[3] '1'), another replica may yet take this
# one over (it has a hand-off): a draining replica does not claim, and must not end it either.
# KEYS: events, meta, lease, tomb, handoff. ARGV: payload of the error event, ttl in ms, '1' or
# '0'.
_FINALIZE_LOST = """
if redis.call('HGET', KEYS[2], 'ended') ~= '0' then return 0 end
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[5]) == 1 then return 0 end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local seq = 0
if #last > 0 then seq = tonumber(string.match(last[1][1], '-(%d+)$')) end
redis.call('XADD', KEYS[1], '0-' .. (seq + 1), 't', 'error', 'd', ARGV[1])
redis.call('HSET', KEYS[2], 'ended', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[4], ARGV[2] * 2)
redis.call('DEL', KEYS[5])
return seq + 1
"""


# Creates a stream's keys in one round trip, unless its meta exists. KEYS: meta, lease, tomb,
# handoff. ARGV: model, owner, created_at, the lease, tomb and meta lifetimes in ms, the
# hand-off ("" for none), and the producing replica's id.
_CREATE = """
if redis.call('HSETNX', KEYS[1], 'model', ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'created_at', ARGV[3], 'ended', '0',
  'producer', ARGV[8])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[4])
redis.call('SET', KEYS[3], '1', 'PX', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
if ARGV[7] ~= '' then redis.call('SET', KEYS[4], ARGV[7], 'PX', ARGV[6]) end
return 1
"""

# Makes the caller a lapsed stream's producer, unless it has ended, its lease is held, or it
# has no hand-off; the dead producer's readers are counted out (they died with it). KEYS:
# meta, lease, handoff, subs. ARGV: the lease in ms, the caller's replica id. Returns the
# hand-off.
_CLAIM = """
if redis.call('HGET', KEYS[1], 'ended') ~= '0' then return false end
if redis.call('EXISTS', KEYS[2]) == 1 then return false end
local handoff = redis.call('GET', KEYS[3])
if not handoff then return false end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
local dead = redis.call('HGET', KEYS[1], 'producer')
if dead then redis.call('HDEL', KEYS[4], dead) end
redis.call('HSET', KEYS[1], 'producer', ARGV[2])
return handoff
"""

# Appends each stream's waiting events, and ends the streams whose batch ends with the terminal
# event. KEYS: events, meta, lease, tomb, handoff, for each stream. ARGV: max_age and ttl in
# ms, this replica's id, then for each stream its event count and whether it ends, then each
# event's seq, type and payload.
# A stream is written only by its producer, and only until it has ended: once another replica
# has taken it over, or ended it as lost, this one's writes are refused (0), so a replica that
# lost its lease in an outage cannot go on beside its successor. An event Redis already has
# (this producer's write whose reply was lost in an outage) is skipped. After the first
# event XADD does not create the events key (NOMKSTREAM): if it is gone, Redis came back empty
# and the stream's start is lost; writing on would only make keys without an expiry, so that
# stream is reported 0 and left alone. Returns 1 or 0 per stream.
_APPEND = """
local max_age, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local at, kept = 4, {}
for s = 0, #KEYS / 5 - 1 do
  local events, meta, lease, tomb = KEYS[s*5+1], KEYS[s*5+2], KEYS[s*5+3], KEYS[s*5+4]
  local count, ends = tonumber(ARGV[at]), ARGV[at+1] == '1'
  local ok = 1
  at = at + 2
  local fenced = redis.call('HMGET', meta, 'producer', 'ended')
  if fenced[1] ~= ARGV[3] or fenced[2] ~= '0' then ok = 0 end
  for _ = 1, count do
    local seq, kind, data = ARGV[at], ARGV[at+1], ARGV[at+2]
    at = at + 3
    if ok == 1 then
      local reply
      if seq == '1' then
        reply = redis.pcall('XADD', events, '0-1', 't', kind, 'd', data)
        if type(reply) ~= 'table' then redis.call('PEXPIRE', events, max_age) end
      else
        reply = redis.pcall('XADD', events, 'NOMKSTREAM', '0-' .. seq, 't', kind, 'd', data)
      end
      if reply == false then
        ok = 0
      elseif type(reply) == 'table' and reply.err and not string.find(reply.err, 'smaller') then
        return reply
      end
    end
  end
  if ok == 1 and ends then
    redis.call('HSET', meta, 'ended', '1')
    redis.call('PEXPIRE', events, ttl)
    redis.call('PEXPIRE', meta, ttl)
    redis.call('DEL', lease, KEYS[s*5+5])
    redis.call('PEXPIRE', tomb, ttl * 2)
  end
  kept[#kept + 1] = ok
end
return kept
"""

# Renews leases, of the streams the caller still produces. KEYS: meta and lease, for each
# stream. ARGV: the caller's replica id, the lease in ms.
_RENEW = """
for i = 1, #KEYS, 2 do
  local fenced = redis.call('HMGET', KEYS[i], 'producer', 'ended')
  if fenced[1] == ARGV[1] and fenced[2] == '0' then
    redis.call('SET', KEYS[i + 1], '1', 'PX', ARGV[2])
  end
end
return 0
"""

# The subscribers of a stream, counted per replica (a hash: replica id -> count), so that a
# takeover can drop the count of the replica that died: its readers died with it, and would
# otherwise keep the stream generating, and billing, after every live reader left.
# KEYS: subs. ARGV: this replica's id, +1 or -1, the key's lifetime in ms. Returns the total.
# A reader leaving a count that is gone (expired, or a Redis that came back empty) leaves
# it gone: a DECR there would make a key of -1 that never expires.
_COUNT_SUBSCRIBER = """
if ARGV[2] == '-1' and redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if ARGV[2] == '1' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
local total = 0
for _, count in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(count) end
return total
"""


def _keys(stream_id: str) -> dict[str, str]:
    base = f"tr:{{{stream_id}}}"
    return {k: f"{base}:{k}" for k in ("events", "meta", "lease", "tomb", "subs", "handoff")}


def _seq_of(entry_id: bytes) -> int:
    return int(entry_id.rpartition(b"-")[2])


def _event_of(entry_id: bytes, fields: dict[bytes, bytes]) -> Event:
    kind: EventType = fields[b"t"].decode()  # type: ignore[assignment]
    return Event(_seq_of(entry_id), kind, fields[b"d"])


class _Health:
    """Whether Redis served the last call, and a line in the log when that changes: at once,
    or, within QUIET seconds of the last line, once those seconds are over (if it still
    differs). A Redis that serves reads and refuses writes (out of memory) flips it on every
    read; the log gets a line per QUIET seconds at most, and its last line is always true."""

    QUIET = 5.0

    def __init__(self) -> None:
        self.up = True
        self._down_since = 0.0
        self._failed_at = 0.0
        self._said_up = True  # what the last line said
        self._said_at = -self.QUIET
        self._flips = 0  # changes since the last line
        self._cause = ""
        self._pending: asyncio.TimerHandle | None = None

    def failed_within(self, seconds: float) -> bool:
        return not self.up and time.monotonic() - self._failed_at < seconds

    def ok(self) -> None:
        if not self.up:
            self.up = True
            self._changed()

    def failed(self, exc: BaseException) -> None:
        self._failed_at = time.monotonic()
        if self.up:
            self.up = False
            self._down_since = self._failed_at
            self._cause = type(exc).__name__
            self._changed()

    def _changed(self) -> None:
        self._flips += 1
        wait = self._said_at + self.QUIET - time.monotonic()
        if wait <= 0:
            self._report()
        elif self._pending is None:
            self._pending = asyncio.get_running_loop().call_later(wait, self._report)

    def _report(self) -> None:
        self._pending = None
        if self.up == self._said_up:
            return  # it flipped and flipped back: nothing to correct
        flips = f" ({self._flips} changes since the last line)" if self._flips > 1 else ""
        if self.up:
            since = time.monotonic() - self._down_since
            logger.warning("redis serves again, after %.1fs%s", since, flips)
        else:
            logger.error(
                "redis is unavailable (%s): new streams get 503; streams under way wait for it%s",
                self._cause,
                flips,
            )
        self._said_up, self._said_at, self._flips = self.up, time.monotonic(), 0


@dataclass(slots=True)
class _Local:
    """A stream this replica produces: what Redis has of it, and the readers here that follow
    it from memory, handed each batch once Redis has stored it."""

    stored: int = 0  # the last seq Redis has acknowledged
    followers: list[Follower] = field(default_factory=list)
    ahead: dict[Follower, int] = field(default_factory=dict)  # attached past `stored`: cursor
    # The last events stored, so that a reader a little behind attaches without reading
    # Redis again: under load the writer moves on during every read, and a reader that must
    # be fully caught up to attach would keep reading through Redis.
    tail: deque[Event] = field(default_factory=lambda: deque(maxlen=TAIL))

    def attach(self, after: int, follower: Follower) -> bool:
        if after < self.stored:  # behind: what it lacks must be in the tail
            if not self.tail or self.tail[0].seq > after + 1:
                return False
            for event in self.tail:
                if event.seq > after and not follower.push(event):
                    return True  # it ended, or must catch up: its task sees to that now
        self.followers.append(follower)
        if after > self.stored:
            self.ahead[follower] = after
        return True


@dataclass(slots=True)
class _Fanout:
    """One stream's shared reader on this replica: its cursor and who it hands events to."""

    cursor: int
    followers: list[Follower] = field(default_factory=list)


class RedisStreamLog(StreamLog):
    def __init__(
        self,
        url: str,
        *,
        max_bytes: int,
        ttl: float,
        max_age: float = 3600.0,
        lease: float = 10.0,
        grace: float = 5.0,
        max_connections: int = 1000,
        cluster: bool = False,
    ) -> None:
        super().__init__(max_bytes=max_bytes, ttl=ttl)
        # Each waiting reader holds a connection for its XREAD BLOCK: size the pool for them.
        # A Redis that does not answer at all (a host gone) must fail as fast as one that
        # refuses: 2 s to connect, and replies within 2 s of the longest XREAD BLOCK.
        # A cluster client takes one node's URL and finds the others itself.
        client = aioredis.RedisCluster if cluster else aioredis.Redis
        self.redis: RedisClient = client.from_url(
            url,
            max_connections=max_connections,
            socket_connect_timeout=2.0,
            socket_timeout=READ_SLICE + 2.0,
        )
        self.cluster = cluster
        self.replica = secrets.token_hex(8)  # this process, in a stream's producer and counts
        self.grace = grace
        self._health = _Health()
        self._failed: set[str] = set()  # streams produced here whose writes gave up
        self.max_age = max_age
        self.lease = lease
        self.renew_every = lease / 3
        self._written: dict[str, tuple[int, int]] = {}  # producer-local: (last seq, bytes)
        self._pending: dict[str, list[Event]] = {}  # appended, not yet written, per stream
        self._writer: asyncio.Task[None] | None = None  # the replica's one writer, if busy
        # A producer awaiting its ending's write: None once stored, or why it could not be.
        self._endings: dict[str, asyncio.Future[StoreUnavailable | None]] = {}
        self._inflight: set[asyncio.Task[Any]] = set()
        self._fanouts: dict[str, _Fanout] = {}
        self._local: dict[str, _Local] = {}  # streams produced here, until their ending is stored
        self._closed = False
        self._finalize = self.redis.register_script(_FINALIZE_LOST)
        self._append_script = self.redis.register_script(_APPEND)
        self._create_script = self.redis.register_script(_CREATE)
        self._claim_script = self.redis.register_script(_CLAIM)
        self._renew_script = self.redis.register_script(_RENEW)
        self._count_subscriber = self.redis.register_script(_COUNT_SUBSCRIBER)

    # ------------------------------------------------------------------ writing

    async def _create(self, stream_id: str, meta: StreamMeta, handoff: bytes) -> None:
        k = _keys(stream_id)
        keys = [k["meta"], k["lease"], k["tomb"], k["handoff"]]
        lives = (self.lease, self.max_age + self.ttl, self.max_age)  # lease, tomb, meta
        ms = [int(seconds * 1000) for seconds in lives]
        created = await self._create_script(
            keys=keys,
            args=[meta.model, meta.owner, str(meta.created_at), *ms, handoff, self.replica],
        )
        if not created:
            raise ValueError(f"stream {stream_id} exists")
        self._written[stream_id] = (0, 0)
        self._local[stream_id] = _Local()

    def append_nowait(self, stream_id: str, event: Event) -> None:
        # Checks and bookkeeping happen now, synchronously, so the next append sees them while
        # earlier events are still being written; the writer keeps each stream's order.
        if stream_id in self._failed:  # its events could not be stored: it cannot go on
            if event.terminal:  # its producer's last word: forget it
                self._failed.discard(stream_id)
            raise StoreUnavailable()
        if stream_id not in self._written:
            raise ValueError(f"stream {stream_id} has ended or is not produced here")
        last, size = self._written[stream_id]
        if event.seq != last + 1:
            raise ValueError(f"stream {stream_id}: seq {event.seq} after {last}")
        if not event.terminal and size + len(event.data) > self.max_bytes:
            raise StreamTooLarge(f"stream {stream_id} passed {self.max_bytes} bytes")
        if event.terminal:
            del self._written[stream_id]
            self._endings[stream_id] = asyncio.get_running_loop().create_future()
        else:
            self._written[stream_id] = (event.seq, size + len(event.data))
        self._pending.setdefault(stream_id, []).append(event)
        if self._writer is None or self._writer.done():
            self._writer = self._spawn(self._write())

    async def append(self, stream_id: str, event: Event) -> None:
        self.append_nowait(stream_id, event)
        ending = self._endings.get(stream_id) if event.terminal else None
        if ending is not None:  # the ending is durable before the producer ends
            failure = await asyncio.shield(ending)
            if failure is not None:
                raise failure

    async def _write(self) -> None:
        """The replica's one writer: every stream's waiting events in one script call, one
        round trip, then the next lot (what gathered meanwhile). Per token, this is what
        sharing streams through Redis costs, so it is paid once per round trip, not once per
        stream or per event.

        Through an outage the events wait here and the lot is tried again, for up to `grace`
        seconds; the script skips what Redis already has (a write whose reply was lost), so
        nothing is written twice."""
        loop = asyncio.get_running_loop()
        failing_since: float | None = None
        while self._pending:
            await asyncio.sleep(GATHER)  # let the replica's other streams join this round trip
            lot, self._pending = self._pending, {}
            try:
                stored = await self._guard(self._write_lot(lot))
            except Exception as exc:
                if not isinstance(exc, StoreUnavailable):  # a bug: no retry would help
                    logger.exception("stream writes failed; their streams end")
                    for stream_id in list(lot):
                        self._give_up(stream_id)
                    continue
                failing_since = loop.time() if failing_since is None else failing_since
                for stream_id, later in self._pending.items():  # after the lot, in order
                    lot.setdefault(stream_id, []).extend(later)
                self._pending = lot
                if loop.time() - failing_since >= self.grace:
                    for stream_id in list(lot):
                        self._give_up(stream_id)
                else:
                    await asyncio.sleep(RETRY_PAUSE)
                continue
            failing_since = None
            for (stream_id, batch), kept in zip(lot.items(), stored, strict=True):
                if kept:
                    self._deliver(stream_id, batch)
                else:  # its key is gone: Redis came back empty, its start is lost
                    self._give_up(stream_id)

    def _give_up(self, stream_id: str) -> None:
        """The stream's events cannot be stored (unreachable past the grace, come back empty,
        refusing writes): it cannot go on. Its readers here read from Redis now and learn the
        outcome there; its producer learns it at its next append (or the ending it awaits),
        and its lease is no longer renewed: once Redis answers, readers anywhere find it lost
        (producer_lost)."""
        local = self._local.pop(stream_id, None)
        for follower in local.followers if local is not None else ():
            follower.interrupt()
        self._pending.pop(stream_id, None)
        if self._written.pop(stream_id, None) is not None:  # it had not ended yet
            self._failed.add(stream_id)
        self._settle_ending(stream_id, StoreUnavailable())

    def _settle_ending(self, stream_id: str, failure: StoreUnavailable | None) -> None:
        ending = self._endings.pop(stream_id, None)
        if ending is not None and not ending.done():
            ending.set_result(failure)

    def _deliver(self, stream_id: str, batch: list[Event]) -> None:
        """Hand a batch Redis now has to the readers following it here, from memory: an event
        reaches a local client only once any replica could replay it too."""
        if batch[-1].terminal:
            self._settle_ending(stream_id, None)
        local = self._local.get(stream_id)
        if local is None:
            return
        for event in batch:
            if event.seq <= local.stored:
                continue  # stored by a write whose reply an outage lost: handed over then
            local.stored = event.seq
            local.tail.append(event)
            for follower in local.followers.copy():
                if local.ahead.get(follower, 0) >= event.seq:
                    continue  # it has this one
                try:
                    keep = follower.push(event)
                except Exception:
                    keep = follower_failed(follower)
                if not keep:
                    local.followers.remove(follower)
        if batch[-1].terminal:
            del self._local[stream_id]

    def _by_slot(self, stream_ids: list[str]) -> list[list[str]]:
        """Streams grouped for one script call each: all in one, but in a cluster, where a
        script's keys must share a slot, one call per stream."""
        return [[stream_id] for stream_id in stream_ids] if self.cluster else [stream_ids]

    async def _write_lot(self, lot: dict[str, list[Event]]) -> list[bool]:
        """One script call for the whole lot (`_by_slot`); for each stream, whether Redis
        kept it."""
        calls = [
            self._write_streams({sid: lot[sid] for sid in group})
            for group in self._by_slot(list(lot))
        ]
        return [kept for one in await asyncio.gather(*calls) for kept in one]

    async def _write_streams(self, lot: dict[str, list[Event]]) -> list[bool]:
        keys: list[str] = []
        args: list[Any] = [int(self.max_age * 1000), int(self.ttl * 1000), self.replica]
        for stream_id, batch in lot.items():
            k = _keys(stream_id)
            keys += (k["events"], k["meta"], k["lease"], k["tomb"], k["handoff"])
            args += (len(batch), 1 if batch[-1].terminal else 0)
            for event in batch:
                args += (event.seq, event.type, event.data)
        kept: Any = await self._append_script(keys=keys, args=args)
        return [bool(flag) for flag in kept]

    # ------------------------------------------------------------------ shielded entry points

    def _spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(work)
        self._inflight.add(task)
        task.add_done_callback(self._settled)
        return task

    def _settled(self, task: asyncio.Task[Any]) -> None:
        self._inflight.discard(task)
        if not task.cancelled():
            # Marked seen: a caller cancelled meanwhile cannot. A caller that awaited it has
            # had it, and the writer logs its own failures (`_write`).
            task.exception()

    async def _guard(self, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` shielded; an unreachable Redis becomes StoreUnavailable."""
        try:
            result = await asyncio.shield(self._spawn(work))
        except UNAVAILABLE as exc:
            self._health.failed(exc)
            raise StoreUnavailable() from None
        self._health.ok()
        return result

    async def _patiently(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """`_guard(make())`, tried again while Redis is unreachable, for up to `grace`."""
        loop = asyncio.get_running_loop()
        give_up: float | None = None
        while True:
            try:
                return await self._guard(make())
            except StoreUnavailable:
                now = loop.time()
                give_up = now + self.grace if give_up is None else give_up
                if now >= give_up:
                    raise
                await asyncio.sleep(min(RETRY_PAUSE, give_up - now))

    async def ready(self) -> bool:
        """A PING, bounded by the client's socket timeout (never cancelled: see above)."""
        try:
            await self._guard(self._ping())
        except StoreUnavailable:
            return False
        return True

    async def _ping(self) -> None:
        await self.redis.ping()

    async def create(self, stream_id: str, meta: StreamMeta, handoff: bytes = b"") -> None:
        if self._health.failed_within(FAIL_FAST):
            raise StoreUnavailable()  # a host gone silent would hold each request 2 s
        await self._guard(self._create(stream_id, meta, handoff))

    async def claim(self, stream_id: str) -> tuple[bytes, list[Event]] | None:
        return await self._guard(self._claim(stream_id))

    async def _claim(self, stream_id: str) -> tuple[bytes, list[Event]] | None:
        k = _keys(stream_id)
        lease_ms = int(self.lease * 1000)
        handoff: Any = await self._claim_script(
            keys=[k["meta"], k["lease"], k["handoff"], k["subs"]], args=[lease_ms, self.replica]
        )
        if handoff is None:
            return None
        entries: Any = await self.redis.xrange(k["events"])
        events = [_event_of(entry_id, fields) for entry_id, fields in entries]
        last = events[-1].seq if events else 0
        self._written[stream_id] = (last, sum(len(event.data) for event in events))
        self._local[stream_id] = _Local(stored=last)
        return bytes(handoff), events

    async def read(self, stream_id: str, after: int, wait: float) -> list[Event]:
        # Waited out in slices: a cancelled reader's shielded call then holds its connection
        # for at most READ_SLICE, not a whole keep-alive interval.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            remaining = deadline - loop.time()
            read = functools.partial(self._read, stream_id, after, min(remaining, READ_SLICE))
            events = await self._patiently(read)
            if events or remaining <= READ_SLICE:
                return events

    async def status(self, stream_id: str) -> StreamStatus:
        return await self._patiently(lambda: self._status(stream_id))

    async def add_subscriber(self, stream_id: str) -> int:
        return await self._guard(self._add_subscriber(stream_id))

    async def remove_subscriber(self, stream_id: str) -> int:
        # Through a blip too: a count left one too high would keep the stream generating
        # (and billing) after its last reader left.
        return await self._patiently(functools.partial(self._remove_subscriber, stream_id))

    async def subscribers(self, stream_id: str) -> int:
        return await self._guard(self._subscribers(stream_id))

    async def publish(self, message: dict[str, Any]) -> None:
        await self._guard(self._publish(message))

    async def meta(self, stream_id: str) -> StreamMeta | None:
        return await self._guard(self._meta(stream_id))

    async def renew_leases(self) -> None:
        if self._written:  # nothing produced here: no call, so no news of Redis either way
            await self._guard(self._renew_leases())

    async def _renew_leases(self) -> None:
        """Called periodically by the producing replica for the streams it is writing: only
        those it still produces (a lease that lapsed in an outage may have been taken)."""
        groups = self._by_slot(list(self._written))
        await asyncio.gather(*(self._renew(group) for group in groups if group))

    async def _renew(self, stream_ids: list[str]) -> None:
        keys: list[str] = []
        for stream_id in stream_ids:
            k = _keys(stream_id)
            keys += (k["meta"], k["lease"])
        await self._renew_script(keys=keys, args=[self.replica, int(self.lease * 1000)])

    # ------------------------------------------------------------------ following

    def attach(self, stream_id: str, after: int, follower: Follower) -> bool:
        """Follow through the stream's shared reader on this replica (started if need be).

        Refused when the reader is already past `after`: the follower reads those first.
        A follower ahead of it is handed events it has (seq <= its cursor) and skips them."""
        if self._closed:
            return False
        local = self._local.get(stream_id)
        if local is not None:  # produced here: followed from memory, with no Redis read
            return local.attach(after, follower)
        fanout = self._fanouts.get(stream_id)
        if fanout is None:
            fanout = self._fanouts[stream_id] = _Fanout(after)
            self._spawn(self._fan_out(stream_id, fanout))
        elif after < fanout.cursor:
            return False
        fanout.followers.append(follower)
        return True

    def detach(self, stream_id: str, follower: Follower) -> None:
        local = self._local.get(stream_id)
        if local is not None and follower in local.followers:
            local.followers.remove(follower)
            local.ahead.pop(follower, None)
        fanout = self._fanouts.get(stream_id)
        if fanout is not None and follower in fanout.followers:
            fanout.followers.remove(follower)

    async def _fan_out(self, stream_id: str, fanout: _Fanout) -> None:
        """Read the stream while anyone here follows it; hand each event to every follower.

        Never cancelled (see the module docstring): it stops after a read slice in which
        nobody followed, after the terminal event, or when the log closes."""
        try:
            while fanout.followers:
                events = await self._read(stream_id, fanout.cursor, READ_SLICE)
                for event in events:
                    fanout.cursor = event.seq
                    hand_over(fanout.followers, event)
                if events and events[-1].terminal:
                    break
        except UNAVAILABLE as exc:  # its followers read by themselves now, patiently
            self._health.failed(exc)
        except Exception as exc:
            logger.warning("stream %s: shared read failed (%s)", stream_id, type(exc).__name__)
        finally:
            if self._fanouts.get(stream_id) is fanout:
                del self._fanouts[stream_id]
            for follower in fanout.followers:  # they read from their cursors, and re-attach
                follower.interrupt()
            fanout.followers.clear()

    # ------------------------------------------------------------------ reading

    async def _read(self, stream_id: str, after: int, wait: float) -> list[Event]:
        # One round trip per wake: XREAD BLOCK returns at once if anything is past the cursor.
        # Only a read that found nothing pays for a status check (existence, producer lease).
        key = _keys(stream_id)["events"]
        block_ms = int(wait * 1000)
        events = await self._xread(key, after, block_ms=block_ms if block_ms > 0 else None)
        if events:
            return events
        status = await self._status(stream_id)  # raises for unknown streams; may end a lost one
        if status.last_seq > after:
            return await self._xread(key, after, block_ms=None)
        return []

    async def _xread(self, key: str, after: int, block_ms: int | None) -> list[Event]:
        reply: Any = await self.redis.xread({key: f"0-{after}"}, block=block_ms)
        if not reply:
            return []
        _, entries = reply[0]
        return [_event_of(entry_id, fields) for entry_id, fields in entries]

    async def _status(self, stream_id: str) -> StreamStatus:
        k = _keys(stream_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(k["meta"], "ended")
            pipe.xrevrange(k["events"], count=1)
            pipe.exists(k["lease"])
            pipe.exists(k["tomb"])
            ended, last, leased, tomb = await pipe.execute()
        if ended is None:
            raise StreamExpired() if tomb else UnknownStream()
        last_seq = _seq_of(last[0][0]) if last else 0
        if ended == b"0" and not leased and stream_id not in self._written:
            if self.take_over is not None and await self.take_over(stream_id):
                return StreamStatus(last_seq, False)  # produced here from now on
            return await self._producer_lost(stream_id, last_seq)
        return StreamStatus(last_seq, ended == b"1")

    async def _producer_lost(self, stream_id: str, last_seq: int) -> StreamStatus:
        k = _keys(stream_id)
        payload = error_event(0, PRODUCER_LOST, client_message(PRODUCER_LOST), retryable=True).data
        keys = [k["events"], k["meta"], k["lease"], k["tomb"], k["handoff"]]
        spare = "1" if self.take_over is not None else "0"
        written = await self._finalize(keys=keys, args=[payload, int(self.ttl * 1000), spare])
        if written:
            return StreamStatus(int(written), True)
        ended = await self.redis.hget(k["meta"], "ended")
        return StreamStatus(last_seq, ended == b"1")  # someone else ended it, or it came back

    async def _add_subscriber(self, stream_id: str) -> int:
        return await self._count(stream_id, 1)

    async def _remove_subscriber(self, stream_id: str) -> int:
        return await self._count(stream_id, -1)

    async def _count(self, stream_id: str, change: int) -> int:
        life_ms = int((self.max_age + self.ttl) * 1000)
        keys = [_keys(stream_id)["subs"]]
        return int(await self._count_subscriber(keys=keys, args=[self.replica, change, life_ms]))

    async def _subscribers(self, stream_id: str) -> int:
        counts: Any = await self.redis.hvals(_keys(stream_id)["subs"])
        return sum(int(count) for count in counts)

    async def _publish(self, message: dict[str, Any]) -> None:
        await self.redis.publish(CONTROL_CHANNEL, orjson.dumps(message))

    async def control_messages(self) -> AsyncIterator[dict[str, Any]]:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(CONTROL_CHANNEL)
            async for raw in pubsub.listen():
                try:
                    message = orjson.loads(raw["data"])
                except (orjson.JSONDecodeError, TypeError, KeyError):
                    continue
                if isinstance(message, dict):
                    yield message
        except UNAVAILABLE as exc:
            self._health.failed(exc)
            raise StoreUnavailable() from None
        finally:
            with contextlib.suppress(*UNAVAILABLE):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _meta(self, stream_id: str) -> StreamMeta | None:
        raw: Any = await self.redis.hgetall(_keys(stream_id)["meta"])
        if not raw:
            return None
        get = {key.decode(): value.decode() for key, value in raw.items()}
        return StreamMeta(
            stream_id, get.get("model", ""), get.get("owner", ""), float(get.get("created_at") or 0)
        )

    async def flush(self) -> None:
        if self._writer is not None and not self._writer.done():
            await asyncio.wait([self._writer])

    async def close(self) -> None:
        self._closed = True  # no more followers: readers still reading get the log's errors
        for local in self._local.values():
            for follower in local.followers:
                follower.interrupt()
            local.followers.clear()
        for fanout in self._fanouts.values():
            for follower in fanout.followers:
                follower.interrupt()
            fanout.followers.clear()  # each shared reader stops after its current slice
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=5.0)
        await self.redis.aclose()
