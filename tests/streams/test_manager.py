"""The manager: disconnect policy, explicit cancel, draining, exactly one ending."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tokenrelay.errors import ServiceUnavailable, UnknownStream
from tokenrelay.events import Event
from tokenrelay.providers.base import GenerationRequest
from tokenrelay.providers.content import Message
from tokenrelay.providers.sim import SimProvider
from tokenrelay.settings import StreamsSection
from tokenrelay.streams.log_memory import MemoryStreamLog
from tokenrelay.streams.manager import StreamManager

pytestmark = pytest.mark.anyio


def _manager(**settings: Any) -> StreamManager:
    return StreamManager(MemoryStreamLog(max_bytes=1 << 20, ttl=60.0), StreamsSection(**settings))


async def _start(manager: StreamManager, model: str, **kw: str) -> str:
    request = GenerationRequest(model, (Message("user", "hi"),))
    return await manager.start(request, SimProvider(), f"sim/{model}", **kw)  # type: ignore[arg-type]


async def _ending(manager: StreamManager, stream_id: str) -> Event:
    for _ in range(200):
        events = await manager.log.read(stream_id, 0, wait=0)
        if events and events[-1].terminal:
            assert sum(e.terminal for e in events) == 1
            return events[-1]
        await asyncio.sleep(0.01)
    raise AssertionError("no terminal event")


async def test_last_subscriber_leaving_cancels_by_default() -> None:
    manager = _manager()
    stream_id = await _start(manager, "slow-start")
    async with manager.subscription(stream_id), manager.subscription(stream_id):
        pass
    ending = await _ending(manager, stream_id)
    assert ending.type == "cancelled"
    assert ending.payload()["reason"] == "client_disconnected"
    assert manager.active_count == 0


async def test_one_of_two_subscribers_leaving_keeps_the_stream() -> None:
    manager = _manager()
    stream_id = await _start(manager, "slow-start")
    async with manager.subscription(stream_id):
        async with manager.subscription(stream_id):
            pass
        await asyncio.sleep(0.02)
        assert manager.active_count == 1
    await _ending(manager, stream_id)


async def test_detach_keeps_generating_then_cancels_after_the_window() -> None:
    manager = _manager(resume_window=0.1)
    stream_id = await _start(manager, "slow-start", on_disconnect="detach")
    async with manager.subscription(stream_id):
        pass
    await asyncio.sleep(0.03)
    assert manager.active_count == 1
    ending = await _ending(manager, stream_id)
    assert ending.payload()["reason"] == "resume_window_expired"


async def test_detach_and_come_back_in_time_finishes() -> None:
    manager = _manager(resume_window=0.1)
    # Paced like a model: `fast` would fill the 1 MiB log within the 0.2 s and end too_large.
    stream_id = await _start(manager, "default+endless", on_disconnect="detach")
    async with manager.subscription(stream_id):
        pass
    async with manager.subscription(stream_id):
        await asyncio.sleep(0.2)  # past the window: the timer was cancelled by coming back
        assert manager.active_count == 1
    await manager.close()


async def test_explicit_cancel() -> None:
    manager = _manager()
    stream_id = await _start(manager, "slow-start")
    assert await manager.cancel(stream_id) is True
    assert (await _ending(manager, stream_id)).payload()["reason"] == "cancelled_by_request"
    assert await manager.cancel(stream_id) is False  # ended already
    with pytest.raises(UnknownStream):
        await manager.cancel("str_nope")


async def test_regression_cancelled_before_first_step_still_gets_one_ending() -> None:
    """A task cancelled before it ever ran never enters its try block; the manager ends it."""
    manager = _manager()
    stream_id = await _start(manager, "fast")
    await manager.cancel(stream_id)  # same tick as start: the coroutine has not begun
    assert (await _ending(manager, stream_id)).type == "cancelled"


async def test_drain_refuses_new_streams_and_ends_open_ones() -> None:
    manager = _manager(drain_timeout=0.05)
    stream_id = await _start(manager, "slow-start")
    manager.begin_drain()
    manager.begin_drain()  # idempotent
    with pytest.raises(ServiceUnavailable):
        await _start(manager, "fast")
    ending = (await _ending(manager, stream_id)).payload()
    assert ending["error_type"] == "server_shutdown"
    assert ending["retryable"] is True


async def test_close_ends_everything() -> None:
    manager = _manager()
    ids = [await _start(manager, "slow-start") for _ in range(3)]
    await manager.close()
    for stream_id in ids:
        assert (await _ending(manager, stream_id)).terminal
    assert manager.active_count == 0
