"""Deadlines that activity pushes back, at no cost per activity.

`IdleTimeout` is `asyncio.timeout` for "nothing happened for `limit` seconds". The code it
guards records each sign of life (a delta) by storing its time in `last`: no call, no timer
work. One loop timer (`loop.call_at`, a heap entry: O(log n) to arm) fires at the earliest
moment the deadline could have passed; it then either re-arms itself for the later moment the
last sign of life allows, or expires the scope. So a stream re-arms its timer about once per
limit, never per token, and each event loop's timers are its own.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType


class IdleTimeout:
    """`async with IdleTimeout(first, then) as idle:` raises TimeoutError out of the block when
    `first` seconds pass with no sign of life, or `then` seconds pass between two after the
    first. A sign of life is `idle.last = time.monotonic()`. A cancel from anyone else stays a
    CancelledError (asyncio.timeout's rules)."""

    __slots__ = ("_first", "_handle", "_loop", "_scope", "_started", "_then", "last")

    def __init__(self, first: float, then: float) -> None:
        self._first = first
        self._then = then
        self._started = time.monotonic()
        self.last = self._started  # the last sign of life (time.monotonic(), the callers' clock)
        self._scope = asyncio.timeout(None)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> IdleTimeout:
        self._loop = asyncio.get_running_loop()
        await self._scope.__aenter__()
        # The earliest the deadline can pass: `then` after a sign of life at once, if shorter.
        self._arm(self._started + min(self._first, self._then))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
        await self._scope.__aexit__(exc_type, exc, tb)

    def _arm(self, due: float) -> None:
        assert self._loop is not None
        self._handle = self._loop.call_at(self._loop.time() + due - time.monotonic(), self._check)

    def _check(self) -> None:
        assert self._loop is not None
        self._handle = None
        now, last = time.monotonic(), self.last
        if last > self._started:
            due = next_check = last + self._then
        else:  # no sign of life yet: one may come any moment and start the shorter limit
            due = self._started + self._first
            next_check = min(due, now + self._then)
        if now >= due:
            self._scope.reschedule(self._loop.time())
        else:
            self._arm(next_check)
