"""Deadlines that activity pushes back, at no cost per activity.

`IdleTimeout` is `asyncio.timeout` for "nothing happened for `limit` seconds". The code it
guards calls `touch()` on each sign of life (a delta, a write), which only stores the time.
One loop timer (`loop.call_at`, a heap entry: O(log n) to arm) fires at the earliest moment
the deadline could have passed; it then either re-arms itself for the later moment that the
last touch allows, or expires the scope. So a stream re-arms its timer at most once per
`limit`, never per token, and each event loop's timers are its own.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType


class IdleTimeout:
    """`async with IdleTimeout(first, then) as idle:` raises TimeoutError out of the block
    when `first` seconds pass before the first `touch()`, or `then` seconds between touches
    after it. A cancel from anyone else stays a CancelledError (asyncio.timeout's rules)."""

    __slots__ = ("_due", "_handle", "_limit", "_loop", "_scope", "_then", "last")

    def __init__(self, first: float, then: float) -> None:
        self._limit = first
        self._then = then
        self.last = time.monotonic()  # the last touch (time.monotonic(), the clock callers hold)
        self._scope = asyncio.timeout(None)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0  # when the timer is set for (time.monotonic())

    async def __aenter__(self) -> IdleTimeout:
        self._loop = asyncio.get_running_loop()
        await self._scope.__aenter__()
        self._arm(self.last + self._limit)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        await self._scope.__aexit__(exc_type, exc, tb)

    def touch(self, now: float) -> None:
        """A sign of life at `now` (time.monotonic()); from the first on, the limit is `then`."""
        self.last = now
        if self._limit != self._then:  # the first touch: a shorter limit needs the timer sooner
            self._limit = self._then
            if self._handle is not None and now + self._then < self._due:
                self._handle.cancel()
                self._arm(now + self._then)

    def _arm(self, due: float) -> None:
        assert self._loop is not None
        self._due = due
        self._handle = self._loop.call_at(self._loop.time() + due - time.monotonic(), self._check)

    def _check(self) -> None:
        due = self.last + self._limit
        if time.monotonic() >= due:
            self._handle = None
            self._scope.reschedule(self._loop.time() if self._loop is not None else None)
        else:
            self._arm(due)
