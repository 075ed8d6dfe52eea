"""Many deadlines on one event-loop timer: for waits that are armed per token and rarely fire.

`asyncio.timeout()` schedules and cancels a loop timer each time it is used. Around every
subscriber read and every client write, once per token, that was a fifth of the server's CPU
(py-spy, benchmarks/RESULTS.md). Here arming is a dict insert and disarming a dict delete. One
timer, set for the earliest deadline, runs whatever is due when it fires and re-arms for the
next. The deadlines this serves (keep-alive waits, `send_timeout`) are seconds long and almost
always disarmed well before they are due, so the timer fires about once per deadline length.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Hashable

logger = logging.getLogger("tokenrelay.timers")

Callback = Callable[[], None]

MIN_STEP = 0.001  # never re-arm closer than this: a timer storm helps nobody


class Deadlines:
    """Callbacks keyed by their owner, each run once when its deadline passes unless disarmed."""

    def __init__(self) -> None:
        self._due: dict[Hashable, tuple[float, Callback]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def __len__(self) -> int:
        return len(self._due)

    def arm(self, key: Hashable, delay: float, callback: Callback) -> None:
        """Run `callback` in `delay` seconds unless disarmed first; re-arming replaces."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new loop (tests run several): the old timer is gone
            self._loop, self._timer, self._timer_at = loop, None, math.inf
        at = loop.time() + delay
        self._due[key] = (at, callback)
        if at < self._timer_at:
            self._schedule(at)

    def disarm(self, key: Hashable) -> None:
        self._due.pop(key, None)

    def _schedule(self, at: float) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._fire)

    def _fire(self) -> None:
        assert self._loop is not None
        self._timer, self._timer_at = None, math.inf
        now = self._loop.time()
        due = [key for key, (at, _) in self._due.items() if at <= now]
        try:
            for key in due:
                entry = self._due.pop(key, None)
                if entry is None:
                    continue  # disarmed by an earlier callback of this round
                _, callback = entry
                try:
                    callback()
                except Exception:  # one bad callback must not stop the others, or the timer
                    logger.exception("deadline callback failed")
        finally:
            self._rearm(now)

    def _rearm(self, now: float) -> None:
        if self._due:
            earliest = min(at for at, _ in self._due.values())
            self._schedule(max(earliest, now + MIN_STEP))


class Timeout:
    """`asyncio.timeout(delay)` served by a shared `Deadlines`: no loop timer of its own.

    Used as `async with Timeout(deadlines, delay) as t:`; when the delay passes, the task is
    cancelled and the block raises TimeoutError, as `asyncio.timeout` does (a cancel from
    anyone else stays a CancelledError). `reschedule(delay)` moves the deadline to `delay`
    seconds from now. Each `asyncio.timeout` kept a loop timer handle per stream (1.1 KB, most
    of it a rescheduled handle waiting to be freed) and scheduled one per use.
    """

    __slots__ = ("_cancelling", "_deadlines", "_delay", "_expired", "_task")

    def __init__(self, deadlines: Deadlines, delay: float) -> None:
        self._deadlines = deadlines
        self._delay = delay
        self._expired = False
        self._cancelling = 0
        self._task: asyncio.Task[object] | None = None

    async def __aenter__(self) -> Timeout:
        self._task = asyncio.current_task()
        if self._task is None:
            raise RuntimeError("Timeout must be used inside a task")
        self._cancelling = self._task.cancelling()
        self.reschedule(self._delay)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        self._deadlines.disarm(self)
        if not self._expired:
            return
        assert self._task is not None
        # As asyncio.timeout: uncancel our own cancel; a TimeoutError only if nobody else's
        # cancel is pending and ours is what ended the block.
        if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc

    def reschedule(self, delay: float) -> None:
        if not self._expired:
            self._deadlines.arm(self, delay, self._expire)

    def _expire(self) -> None:
        assert self._task is not None
        self._expired = True
        self._task.cancel()
