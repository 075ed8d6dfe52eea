"""The in-process stream log: a list of events per stream and a set of waiting readers.

Readers wait on a future of their own, resolved by the next append: no polling, and a cancelled
reader cannot cancel anyone else's wake-up (as awaiting one shared future would).
Expired streams are swept lazily when streams are created, at most once per `sweep_interval`;
their ids are remembered (a bounded tombstone list, for another TTL) so that a late resume gets
410 "expired" rather than 404 "never existed".
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import partial

from tokenrelay.errors import StreamExpired, StreamTooLarge, UnknownStream
from tokenrelay.events import Event
from tokenrelay.streams.log import StreamLog, StreamMeta, StreamStatus
from tokenrelay.timers import Deadlines

MAX_TOMBSTONES = 100_000


@dataclass(slots=True)
class _Entry:
    meta: StreamMeta
    events: list[Event] = field(default_factory=list)
    size: int = 0
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    expires_at: float | None = None  # set by the terminal event

    @property
    def ended(self) -> bool:
        return self.expires_at is not None

    def wake(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()


def _time_out(waiter: asyncio.Future[None]) -> None:
    """A read's wait is over: it returns what it has, which is nothing new (an empty batch)."""
    if not waiter.done():
        waiter.set_result(None)


class MemoryStreamLog(StreamLog):
    def __init__(self, *, max_bytes: int, ttl: float, sweep_interval: float = 5.0) -> None:
        super().__init__(max_bytes=max_bytes, ttl=ttl)
        self._entries: dict[str, _Entry] = {}
        self._tombstones: OrderedDict[str, float] = OrderedDict()  # id -> forget after
        self._subscribers: dict[str, int] = {}
        self._sweep_interval = sweep_interval
        self._last_sweep = time.monotonic()
        self._wait_deadlines = Deadlines()  # one loop timer for every reader's wait

    def __len__(self) -> int:
        return len(self._entries)

    async def create(self, stream_id: str, meta: StreamMeta) -> None:
        self._sweep()
        if stream_id in self._entries:
            raise ValueError(f"stream {stream_id} exists")
        self._entries[stream_id] = _Entry(meta)

    def append_nowait(self, stream_id: str, event: Event) -> None:
        entry = self._live_entry(stream_id)
        if entry.ended:
            raise ValueError(f"stream {stream_id} has ended; {event.type} refused")
        if event.seq != len(entry.events) + 1:
            raise ValueError(f"stream {stream_id}: seq {event.seq} after {len(entry.events)}")
        if not event.terminal and entry.size + len(event.data) > self.max_bytes:
            raise StreamTooLarge(f"stream {stream_id} passed {self.max_bytes} bytes")
        entry.events.append(event)
        entry.size += len(event.data)
        if event.terminal:
            entry.expires_at = time.monotonic() + self.ttl
        entry.wake()

    async def read(self, stream_id: str, after: int, wait: float) -> list[Event]:
        entry = self._live_entry(stream_id)
        if len(entry.events) > after or entry.ended:
            return entry.events[after:]
        waiter = asyncio.get_running_loop().create_future()
        entry.waiters.append(waiter)
        self._wait_deadlines.arm(waiter, wait, partial(_time_out, waiter))
        try:
            await waiter
        finally:
            self._wait_deadlines.disarm(waiter)
            if waiter in entry.waiters:
                entry.waiters.remove(waiter)
        return entry.events[after:]

    async def status(self, stream_id: str) -> StreamStatus:
        entry = self._live_entry(stream_id)
        return StreamStatus(len(entry.events), entry.ended)

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
        entry = self._entries.get(stream_id)
        if entry is None or self._expired(entry):
            return None
        return entry.meta

    async def close(self) -> None:
        for entry in self._entries.values():
            entry.wake()
        self._entries.clear()

    def _live_entry(self, stream_id: str) -> _Entry:
        entry = self._entries.get(stream_id)
        if entry is not None and not self._expired(entry):
            return entry
        if entry is not None or stream_id in self._tombstones:
            raise StreamExpired()
        raise UnknownStream()

    @staticmethod
    def _expired(entry: _Entry) -> bool:
        return entry.expires_at is not None and entry.expires_at <= time.monotonic()

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < self._sweep_interval:
            return
        self._last_sweep = now
        for stream_id in [k for k, e in self._entries.items() if self._expired(e)]:
            del self._entries[stream_id]
            self._tombstones[stream_id] = now + self.ttl
        while self._tombstones and (
            len(self._tombstones) > MAX_TOMBSTONES or next(iter(self._tombstones.values())) < now
        ):
            self._tombstones.popitem(last=False)
