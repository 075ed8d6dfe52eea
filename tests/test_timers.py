"""IdleTimeout: a deadline that activity pushes back, with asyncio.timeout's rules."""

from __future__ import annotations

import asyncio
import time

import pytest

from tokenrelay.timers import IdleTimeout

pytestmark = pytest.mark.anyio


async def _idle_for(first: float, then: float, touches: list[float], wait: float) -> int:
    """A sign of life after each delay of `touches`, then wait `wait`; how many were given."""
    made = 0
    async with IdleTimeout(first, then) as idle:
        for delay in touches:
            await asyncio.sleep(delay)
            idle.last = time.monotonic()
            made += 1
        await asyncio.sleep(wait)
    return made


async def test_it_raises_timeout_error_when_nothing_happens_before_the_first_limit() -> None:
    with pytest.raises(TimeoutError):
        await _idle_for(0.05, 10.0, [], wait=5)


async def test_touches_push_it_back_and_then_the_second_limit_applies() -> None:
    made: list[int] = []

    async def guarded() -> None:
        async with IdleTimeout(0.1, 0.15) as idle:
            for _ in range(6):  # 0.3 s of activity, every 50 ms: past the first limit
                await asyncio.sleep(0.05)
                idle.last = time.monotonic()
                made.append(1)
            await asyncio.sleep(5)

    with pytest.raises(TimeoutError):
        await guarded()
    assert len(made) == 6  # never cut during the activity: the touches pushed it back


async def test_a_shorter_limit_after_the_first_touch_applies_at_once() -> None:
    """Waiting 60 s for the first token, then 0.05 s between tokens: a stall after the first
    token is found within the short limit, not when the long one would have run out."""
    task = asyncio.create_task(_idle_for(60.0, 0.05, [0.01], wait=5))
    await asyncio.sleep(0.5)
    assert task.done()
    with pytest.raises(TimeoutError):
        task.result()


async def test_a_first_sign_of_life_after_the_first_check_still_starts_the_short_limit() -> None:
    """Regression: the first check found nothing yet and was set again for the long limit, so
    a stall that began after a later first token was found only when the long limit ran out."""
    task = asyncio.create_task(_idle_for(30.0, 0.05, [0.2], wait=5))
    await asyncio.sleep(1.0)  # the short limit after the token at 0.2 s, with a wide margin
    assert task.done()
    with pytest.raises(TimeoutError):
        task.result()


async def test_a_block_that_finishes_in_time_changes_nothing() -> None:
    assert await _idle_for(0.05, 0.05, [0.01, 0.01], wait=0.01) == 2
    await asyncio.sleep(0.1)  # its timer is gone: nothing fires later
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0


async def test_someone_elses_cancel_stays_a_cancel() -> None:
    task = asyncio.create_task(_idle_for(5.0, 5.0, [], wait=5))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_outer_timeout_is_the_outer_ones() -> None:
    inner_saw: list[type[BaseException]] = []

    async def nested() -> None:
        async with asyncio.timeout(0.05):
            try:
                await _idle_for(5.0, 5.0, [], wait=1)
            except BaseException as exc:
                inner_saw.append(type(exc))
                raise

    with pytest.raises(TimeoutError):
        await nested()
    assert inner_saw == [asyncio.CancelledError]  # not a TimeoutError of its own
