"""The in-process stream log: each stream's events, kept as plain bytes, and its waiting readers.

A stream keeps its events for the TTL, so a busy replica holds millions. Kept as `Event`
objects they would all be tracked by the garbage collector, and every full collection would
walk them. So an entry keeps each event's payload in a list of untracked bytes, and the types
of the few events that are not tokens by index (`kinds`), and builds `Event`s again for the
readers that catch up (a live reader gets the producer's own). When a stream ends, its entry
is retired to a record of plain values, which CPython's collector stops tracking, with its
payloads joined into one `bytes` (`_Ended`). Records are kept in the order the streams ended,
which is the order they expire in, so the sweep stops at the first one still alive.
(docs/performance.md has what an ended stream costs.)

Readers wait on a future of their own, resolved by the next append: no polling, and a cancelled
reader cannot cancel anyone else's wake-up (as awaiting one shared future would). A caught-up
reader may instead attach a follower, which the append hands each event to directly: the
producer then delivers a live token without waking the reader's task at all.
Expired streams are swept lazily when streams are created, at most once per `sweep_interval`;
their ids are remembered (a bounded tombstone list, for another TTL) so that a late resume gets
410 "expired" rather than 404 "never existed". Ended streams together keep at most
`max_ended_bytes` of payloads: past it, the oldest go at once, as if their TTL were over (a
busy replica ending 100 answers a second would otherwise hold ~480 MB of them, whatever its
memory).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from tokenrelay.errors import StreamExpired, StreamTooLarge, UnknownStream
from tokenrelay.events import TERMINAL_TYPES, Event, EventType
from tokenrelay.metrics import METRICS
from tokenrelay.streams.log import (
    Follower,
    StreamLog,
    StreamMeta,
    StreamStatus,
    follower_failed,
    hand_over,
)

logger = logging.getLogger("tokenrelay.log")

MAX_TOMBSTONES = 100_000


@dataclass(slots=True)
class _Entry:
    meta: StreamMeta
    payloads: list[bytes] = field(default_factory=list)  # event i has seq i + 1
    kinds: dict[int, EventType] = field(default_factory=dict)  # i -> type, if not a token
    size: int = 0
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    followers: list[Follower] = field(default_factory=list)

    @property
    def last_seq(self) -> int:
        return len(self.payloads)

    def events_after(self, after: int) -> list[Event]:
        return _events(self.kinds, self.payloads, after)

    def retired(self, expires_at: float) -> _Record:
        at, kinds = tuple(self.kinds), tuple(self.kinds.values())
        lines = b"\n".join(self.payloads)
        # Every payload is one line of JSON (events.py; the wire formats rely on it too). If
        # one ever were not, its stream keeps a bytes object per event, as it used to.
        payloads = lines if lines.count(b"\n") == len(self.payloads) - 1 else tuple(self.payloads)
        return _Ended(self.meta, at, kinds, payloads, len(self.payloads), expires_at).record()

    def wake(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()


_Record = tuple[Any, ...]  # an `_Ended` as a plain tuple (see _Ended.record)


class _Ended(NamedTuple):
    """An ended stream, for the rest of its TTL: nothing more is appended, followed or waited
    for. The log stores it as `record()` and makes one of these when a reader asks: CPython
    stops tracking a tuple of plain values, but only a plain tuple, not a named one.

    Its payloads are joined into one `bytes`, a line each: a `bytes` object per event costs its
    header and allocator rounding on top of the payload. Readers of ended streams, which are
    rare (a resume, a late tab), split the bytes again."""

    meta: StreamMeta
    kinds_at: tuple[int, ...]  # flat tuples of plain values: a tuple of pairs stays tracked
    kinds: tuple[EventType, ...]
    payloads: bytes | tuple[bytes, ...]  # joined by line breaks (see `_Entry.retired`)
    last_seq: int
    expires_at: float

    def record(self) -> _Record:
        return (tuple(self.meta), *self[1:])

    @classmethod
    def of(cls, record: _Record) -> _Ended:
        meta, *rest = record
        return cls(StreamMeta._make(meta), *rest)

    @property
    def size(self) -> int:
        """The payload bytes it keeps (as `_Entry.size` counted them)."""
        lines = self.payloads
        if isinstance(lines, bytes):
            return len(lines) - max(0, self.last_seq - 1)  # less the line breaks
        return sum(map(len, lines))

    def events_after(self, after: int) -> list[Event]:
        if after >= self.last_seq:
            return []
        lines = self.payloads
        payloads = lines.split(b"\n") if isinstance(lines, bytes) else lines
        return _events(dict(zip(self.kinds_at, self.kinds, strict=True)), payloads, after)


def _events(kinds: dict[int, EventType], payloads: Sequence[bytes], after: int) -> list[Event]:
    kind = kinds.get
    return [
        Event(seq, kind(seq - 1, "token"), data)
        for seq, data in enumerate(payloads[after:], after + 1)
    ]


def _time_out(waiter: asyncio.Future[None]) -> None:
    """A read's wait is over: it returns what it has, which is nothing new (an empty batch)."""
    if not waiter.done():
        waiter.set_result(None)


class MemoryStreamLog(StreamLog):
    def __init__(
        self,
        *,
        max_bytes: int,
        ttl: float,
        sweep_interval: float = 5.0,
        max_ended_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        super().__init__(max_bytes=max_bytes, ttl=ttl)
        self._entries: dict[str, _Entry] = {}  # streams that have not ended
        self._ended: OrderedDict[str, _Record] = OrderedDict()  # by ending time, until expiry
        self._ended_bytes = 0  # their payloads, all together
        self.max_ended_bytes = max_ended_bytes
        self._tombstones: OrderedDict[str, float] = OrderedDict()  # id -> forget after
        self._subscribers: dict[str, int] = {}
        self._sweep_interval = sweep_interval
        self._last_sweep = time.monotonic()

    def __len__(self) -> int:
        return len(self._entries) + len(self._ended)

    async def create(self, stream_id: str, meta: StreamMeta, handoff: bytes = b"") -> None:
        self._sweep()
        if stream_id in self._entries or stream_id in self._ended:
            raise ValueError(f"stream {stream_id} exists")
        self._entries[stream_id] = _Entry(meta)

    def append_nowait(self, stream_id: str, event: Event) -> None:
        # The hot path: once per token, so it is written out flat (no helper calls).
        entry = self._entries.get(stream_id)
        if entry is None:
            self._refuse(stream_id, event)
            return
        index = len(entry.payloads)  # the event's own; its seq is one more
        if event.seq != index + 1:
            raise ValueError(f"stream {stream_id}: seq {event.seq} after {index}")
        size = len(event.data)
        terminal = event.type in TERMINAL_TYPES
        if not terminal and entry.size + size > self.max_bytes:
            raise StreamTooLarge(f"stream {stream_id} passed {self.max_bytes} bytes")
        if event.type != "token":
            entry.kinds[index] = event.type
        entry.payloads.append(event.data)
        entry.size += size
        followers = entry.followers
        if len(followers) == 1:  # one caught-up reader, the usual case: no copy, no loop
            try:
                keep = followers[0].push(event)
            except Exception:
                keep = follower_failed(followers[0])
            if not keep:
                followers.clear()
        elif followers:
            hand_over(followers, event)
        if entry.waiters:
            entry.wake()
        if terminal:  # readers woken above still read their events from the live entry
            del self._entries[stream_id]
            self._ended[stream_id] = entry.retired(time.monotonic() + self.ttl)
            self._ended_bytes += entry.size
            if self._ended_bytes > self.max_ended_bytes:
                self._evict_oldest()
            METRICS.ended_bytes = self._ended_bytes

    def _refuse(self, stream_id: str, event: Event) -> None:
        """Why an append cannot go in: an unknown, expired or ended stream (always raises)."""
        self._live_entry(stream_id)  # raises UnknownStream or StreamExpired
        raise ValueError(f"stream {stream_id} has ended; {event.type} refused")

    def attach(self, stream_id: str, after: int, follower: Follower) -> bool:
        entry = self._live_entry(stream_id)
        if isinstance(entry, _Ended) or entry.last_seq > after:
            return False
        entry.followers.append(follower)
        return True

    def detach(self, stream_id: str, follower: Follower) -> None:
        entry = self._entries.get(stream_id)
        if entry is not None and follower in entry.followers:
            entry.followers.remove(follower)

    async def read(self, stream_id: str, after: int, wait: float) -> list[Event]:
        entry = self._live_entry(stream_id)
        if isinstance(entry, _Ended) or entry.last_seq > after or wait <= 0:
            return entry.events_after(after)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        entry.waiters.append(waiter)
        timer = loop.call_later(wait, _time_out, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            if waiter in entry.waiters:
                entry.waiters.remove(waiter)
        return entry.events_after(after)

    async def status(self, stream_id: str) -> StreamStatus:
        entry = self._live_entry(stream_id)
        return StreamStatus(entry.last_seq, isinstance(entry, _Ended))

    async def add_subscriber(self, stream_id: str) -> int:
        self._subscribers[stream_id] = self._subscribers.get(stream_id, 0) + 1
        return self._subscribers[stream_id]

    async def subscribers(self, stream_id: str) -> int:
        return self._subscribers.get(stream_id, 0)

    async def remove_subscriber(self, stream_id: str) -> int:
        count = self._subscribers.get(stream_id, 0) - 1
        if count > 0:
            self._subscribers[stream_id] = count
        else:
            self._subscribers.pop(stream_id, None)
        return count

    async def meta(self, stream_id: str) -> StreamMeta | None:
        entry = self._entry(stream_id)
        if entry is None or self._expired(entry):
            return None
        return entry.meta

    async def close(self) -> None:
        for entry in self._entries.values():
            for follower in entry.followers:
                follower.interrupt()
            entry.followers.clear()
            entry.wake()
        self._entries.clear()
        self._ended.clear()
        self._ended_bytes = 0

    def _live_entry(self, stream_id: str) -> _Entry | _Ended:
        """The stream's entry, live or ended, unless its TTL is over."""
        entry = self._entry(stream_id)
        if entry is not None and not self._expired(entry):
            return entry
        if entry is not None or stream_id in self._tombstones:
            raise StreamExpired()
        raise UnknownStream()

    def _entry(self, stream_id: str) -> _Entry | _Ended | None:
        entry = self._entries.get(stream_id)
        if entry is None and (record := self._ended.get(stream_id)) is not None:
            return _Ended.of(record)
        return entry

    @staticmethod
    def _expired(entry: _Entry | _Ended) -> bool:
        return isinstance(entry, _Ended) and entry.expires_at <= time.monotonic()

    def _evict_oldest(self) -> None:
        """Drop ended streams, oldest first, until they fit under `max_ended_bytes`."""
        now = time.monotonic()
        while self._ended_bytes > self.max_ended_bytes and self._ended:
            self._forget_oldest(now)
            METRICS.ended_evicted += 1

    def _forget_oldest(self, now: float) -> None:
        stream_id, record = self._ended.popitem(last=False)
        self._ended_bytes -= _Ended.of(record).size
        self._tombstones[stream_id] = now + self.ttl

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < self._sweep_interval:
            return
        self._last_sweep = now
        while self._ended and _Ended.of(next(iter(self._ended.values()))).expires_at <= now:
            self._forget_oldest(now)
        METRICS.ended_bytes = self._ended_bytes
        while self._tombstones and (
            len(self._tombstones) > MAX_TOMBSTONES or next(iter(self._tombstones.values())) < now
        ):
            self._tombstones.popitem(last=False)
