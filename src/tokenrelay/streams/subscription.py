"""A subscription: one reader of one stream, from a cursor, writing to one client.

It replays what the log holds after its cursor, then follows: attached to the log
(`StreamLog.attach`), it is handed each new event inside the append that stores it and writes
it there and then through its `Writer`. A live token therefore wakes no task when the writer
can write at once. The subscription's own task wakes only to:

    drain       the writer held bytes (the client's socket is full, or the writer must
                await a send): the task awaits `drain()` within `send_timeout`, still
                attached, so events pushed meanwhile join what is held (up to MAX_HELD
                bytes; past that it detaches, and catches up from the log once drained)
    keep-alive  nothing was written for `keepalive` seconds: it writes a ping
    end         the terminal event is written: the subscription is over
    catch up    a gap in what it was handed, or too much held: it reads from its cursor,
                then attaches again
    interrupt   the log is closing, or a push failed: it reads from its cursor

It knows nothing of HTTP or of any server: an encoder turns events into bytes (a dialect's
wire form, or nothing at all for a collector), and a writer moves bytes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Protocol

from tokenrelay.events import TERMINAL_TYPES, Event
from tokenrelay.sse import PING
from tokenrelay.streams.log import StreamLog
from tokenrelay.wire.common import EventEncoder

logger = logging.getLogger("tokenrelay.subscription")

MAX_WRITE = 64 * 1024  # bytes per write while catching up: a stalled client holds at most one
MAX_HELD = 256 * 1024  # bytes held while following before it detaches to catch up later


class Writer(Protocol):
    """The port a subscription writes through.

    `write_now(data)` hands over bytes without waiting. True: the transport has them. False:
    they are held, after whatever was held before them (a writer never reorders), and
    `drain()` sends them. `drain()` returns once nothing is held; it waits while the client's
    socket is full, and is the only call that waits.
    """

    def write_now(self, data: bytes) -> bool: ...

    async def drain(self) -> None: ...


class Subscription:
    """Writes one stream's events after `cursor` to one client; see the module docstring."""

    def __init__(
        self,
        log: StreamLog,
        stream_id: str,
        cursor: int,
        encoder: EventEncoder,
        writer: Writer,
        *,
        keepalive: float,
        send_timeout: float,
    ) -> None:
        self.cursor = cursor  # the last seq handed to the writer
        self._log = log
        self._stream_id = stream_id
        self._encoder = encoder
        self._encode = encoder.encode_one  # once per token: bound once
        self._writer = writer
        self._keepalive = keepalive
        self._send_timeout = send_timeout
        self._held = 0  # bytes the writer holds (written since the last drain returned False)
        self._ended = False  # the terminal event is with the writer
        self._catch_up = False
        self._ping_due = False
        self._wrote = False  # something was written since the last keep-alive check
        self._wake: asyncio.Future[None] | None = None
        self._keepalive_timer: asyncio.TimerHandle | None = None

    async def run(self) -> bool:
        """Until the terminal event is written (True), or the client did not drain a write
        within `send_timeout` (False: it is dropped, and can resume)."""
        self._restart_keepalive()
        try:
            while not self._ended:
                if not await self._replay():
                    return False
                if self._ended:
                    break
                if self._log.attach(self._stream_id, self.cursor, self):
                    try:
                        if not await self._follow():
                            return False
                    finally:
                        self._log.detach(self._stream_id, self)
                elif await self._had_ending():
                    break
        finally:
            if self._keepalive_timer is not None:
                self._keepalive_timer.cancel()
        return True

    # ---------------------------------------------------------------- the task's side

    async def _replay(self) -> bool:
        """Write what the log holds after the cursor, in writes of at most MAX_WRITE bytes.

        One read, then the caller tries to attach: a log that can hand over what came since
        (a Redis producer's tail) takes the reader at once. Reading until a read comes back
        empty kept readers on Redis under load, where every read takes longer than the next
        token does to arrive (bench_log --paced 50: 33 reads per stream)."""
        events = await self._log.read(self._stream_id, self.cursor, wait=0)
        for batch in _batches(events):
            self._write(self._encoder.encode(batch))
            self.cursor = batch[-1].seq
            if not await self._drained():
                return False
        if events and events[-1].type in TERMINAL_TYPES:
            self._ended = True
        return True

    async def _follow(self) -> bool:
        """Attached: sleep until a push or the keep-alive needs this task (module doc)."""
        self._catch_up = False
        self._restart_keepalive()  # the first ping comes `keepalive` after the last replay
        loop = asyncio.get_running_loop()
        while True:
            if not (self._held or self._ping_due or self._ended or self._catch_up):
                self._wake = loop.create_future()
                try:
                    await self._wake
                finally:
                    self._wake = None
            if self._ping_due:
                self._ping_due = False
                self._write(PING, news=False)  # a ping keeps the connection, not the stream
            if not await self._drained():
                return False
            if self._ended or self._catch_up:
                return True

    async def _had_ending(self) -> bool:
        """Attaching was refused: whether that is because this reader has had the ending."""
        status = await self._log.status(self._stream_id)
        return status.ended and self.cursor >= status.last_seq

    def _write(self, data: bytes, *, news: bool = True) -> None:
        if data:
            self._wrote = news
            if not self._writer.write_now(data):
                self._held += len(data)

    async def _drained(self) -> bool:
        """Wait for what the writer holds to go out; False if it took past `send_timeout`."""
        if not self._held:
            return True
        try:
            async with asyncio.timeout(self._send_timeout):
                await self._writer.drain()
        except TimeoutError:
            logger.info("stream %s: client did not drain in time; dropped", self._stream_id)
            return False
        self._held = 0
        return True

    def _restart_keepalive(self) -> None:
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
        self._wrote = False
        loop = asyncio.get_running_loop()
        self._keepalive_timer = loop.call_later(self._keepalive, self._keepalive_due)

    def _keepalive_due(self) -> None:
        """Every `keepalive` seconds, one timer per subscription, not re-armed per token: a
        ping if nothing was written since the last time."""
        if self._wrote:  # tokens are flowing: that is keep-alive enough
            self._wrote = False
        else:
            self._ping_due = True
            self._wakeup()
        loop = asyncio.get_running_loop()
        self._keepalive_timer = loop.call_later(self._keepalive, self._keepalive_due)

    def _wakeup(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    # ---------------------------------------------------------------- the log's side (Follower)

    def push(self, event: Event) -> bool:
        """Write `event` now, inside the append that stored it; False to be detached."""
        seq = event.seq
        if seq <= self.cursor:
            return True  # already written (a shared reader may overlap what was replayed)
        if seq != self.cursor + 1 or self._held > MAX_HELD:
            self.interrupt()  # a gap, or too much held: read from the log instead
            return False
        data = self._encode(event)
        if data:  # `_write`, written out: this is once per token
            self._wrote = True
            if not self._writer.write_now(data):
                self._held += len(data)
        self.cursor = seq
        if event.type in TERMINAL_TYPES:
            self._ended = True
            self._wakeup()
            return False
        if self._held:
            self._wakeup()
        return True

    def interrupt(self) -> None:
        """Stop following; the task catches up from the log."""
        self._catch_up = True
        self._wakeup()


def _batches(events: list[Event]) -> Iterator[list[Event]]:
    """`events` in runs of about MAX_WRITE bytes (whole events)."""
    if len(events) == 1:
        yield events
        return
    start, size = 0, 0
    for index, event in enumerate(events):
        size += len(event.data) + 64  # the id and framing, roughly
        if size >= MAX_WRITE:
            yield events[start : index + 1]
            start, size = index + 1, 0
    if start < len(events):
        yield events[start:]
