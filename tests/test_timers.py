"""Deadlines: many deadlines on one loop timer."""

from __future__ import annotations

import asyncio

import pytest

from tokenrelay.timers import Deadlines, Timeout


@pytest.mark.anyio
async def test_a_deadline_fires_once_after_its_delay() -> None:
    deadlines, fired = Deadlines(), []
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadlines.arm("a", 0.05, lambda: fired.append(loop.time() - started))
    await asyncio.sleep(0.2)
    assert len(fired) == 1
    assert fired[0] >= 0.05
    assert len(deadlines) == 0


@pytest.mark.anyio
async def test_disarmed_deadlines_never_fire() -> None:
    deadlines, fired = Deadlines(), []
    deadlines.arm("a", 0.02, lambda: fired.append("a"))
    deadlines.disarm("a")
    deadlines.disarm("never armed")
    await asyncio.sleep(0.1)
    assert fired == []


@pytest.mark.anyio
async def test_re_arming_a_key_replaces_its_deadline() -> None:
    deadlines, fired = Deadlines(), []
    deadlines.arm("a", 0.02, lambda: fired.append("first"))
    deadlines.arm("a", 0.08, lambda: fired.append("second"))
    await asyncio.sleep(0.05)
    assert fired == []
    await asyncio.sleep(0.1)
    assert fired == ["second"]


@pytest.mark.anyio
async def test_many_deadlines_fire_in_order_of_their_due_time() -> None:
    deadlines, fired = Deadlines(), []
    for name, delay in [("late", 0.09), ("early", 0.01), ("middle", 0.05)]:
        deadlines.arm(name, delay, lambda name=name: fired.append(name))  # type: ignore[misc]
    await asyncio.sleep(0.03)
    assert fired == ["early"]
    await asyncio.sleep(0.1)
    assert fired == ["early", "middle", "late"]


@pytest.mark.anyio
async def test_a_later_deadline_does_not_move_the_timer_for_an_earlier_one() -> None:
    deadlines, fired = Deadlines(), []
    deadlines.arm("early", 0.02, lambda: fired.append("early"))
    deadlines.arm("late", 5, lambda: fired.append("late"))
    await asyncio.sleep(0.08)
    assert fired == ["early"]
    assert len(deadlines) == 1


def test_one_instance_serves_successive_event_loops() -> None:
    deadlines, fired = Deadlines(), []

    async def arm_and_wait(name: str) -> None:
        deadlines.arm(name, 0.01, lambda: fired.append(name))
        await asyncio.sleep(0.05)

    asyncio.run(arm_and_wait("first loop"))
    asyncio.run(arm_and_wait("second loop"))
    assert fired == ["first loop", "second loop"]


@pytest.mark.anyio
async def test_a_failing_callback_neither_stops_the_others_nor_the_timer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    deadlines, fired = Deadlines(), []

    def broken() -> None:
        raise RuntimeError("boom")

    deadlines.arm("broken", 0.01, broken)
    deadlines.arm("ok", 0.01, lambda: fired.append("ok"))
    deadlines.arm("later", 0.05, lambda: fired.append("later"))
    await asyncio.sleep(0.15)
    assert fired == ["ok", "later"]
    assert "deadline callback failed" in caplog.text


@pytest.mark.anyio
async def test_timeout_raises_timeout_error_when_its_delay_passes() -> None:
    with pytest.raises(TimeoutError):
        async with Timeout(Deadlines(), 0.02):
            await asyncio.sleep(1)
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_timeout_that_does_not_pass_changes_nothing() -> None:
    deadlines = Deadlines()
    async with Timeout(deadlines, 0.2):
        await asyncio.sleep(0.01)
    assert len(deadlines) == 0  # disarmed on the way out
    await asyncio.sleep(0.25)  # and nothing fires later on this task


@pytest.mark.anyio
async def test_timeout_reschedule_moves_the_deadline_from_now() -> None:
    async def moved_once() -> None:
        async with Timeout(Deadlines(), 0.05) as deadline:
            await asyncio.sleep(0.03)
            deadline.reschedule(0.1)
            await asyncio.sleep(1)

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await moved_once()
    assert loop.time() - started >= 0.13


@pytest.mark.anyio
async def test_timeout_leaves_someone_elses_cancel_a_cancel() -> None:
    async def guarded() -> None:
        async with Timeout(Deadlines(), 5):
            await asyncio.sleep(1)

    task = asyncio.ensure_future(guarded())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.anyio
async def test_timeout_inside_a_cancelled_scope_stays_a_cancel() -> None:
    """Both at once: an outer cancel pending when the deadline fires is not a timeout."""

    async def guarded() -> None:
        async with Timeout(Deadlines(), 0.02):
            try:
                await asyncio.sleep(1)
            finally:
                await asyncio.sleep(0.05)  # cleanup, during which the deadline passes

    task = asyncio.ensure_future(guarded())
    await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
