"""A key's concurrency slots are given back exactly once, however a stream ends: LiteLLM's
leak (a cancelled or cut stream keeping its slot until the key is blocked for good)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator

import pytest

from tokenrelay.auth.keys import ApiKey, KeyLimits
from tokenrelay.auth.limits import MemoryLimiter
from tokenrelay.errors import KeyOverLimit
from tokenrelay.providers.base import Delta, GenerationRequest
from tokenrelay.providers.content import Message
from tokenrelay.providers.sim import SimProvider
from tokenrelay.settings import StreamsSection
from tokenrelay.streams.log_memory import MemoryStreamLog
from tokenrelay.streams.manager import StreamManager

pytestmark = pytest.mark.anyio

KEY = ApiKey("team", "0" * 64, 0.0, KeyLimits(max_concurrent=1000))


class Crashing(SimProvider):
    """A provider with a bug: an exception that is no GenerationError."""

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        yield Delta("one")
        raise RuntimeError("a bug")


# How a stream can end: the model name, and what the test does to it once started.
ENDINGS = [
    ("fast", None),  # done
    ("fast+error-after-1", None),  # an upstream error mid-stream
    ("fast+rate-limit", None),  # a failure before the first token
    ("fast+content-filter-after-1", None),
    ("fast+reset-after-1", None),
    ("slow-start", "cancel"),  # DELETE
    ("slow-start", "disconnect"),  # its last reader left
    ("crash", None),  # an exception inside the stream's own code path
    ("slow-start", "drain"),  # shutdown
]


class CountingLimiter(MemoryLimiter):
    """Counts releases per stream: "exactly once" must be checked, not just "at least"."""

    def __init__(self) -> None:
        super().__init__()
        self.released: dict[str, int] = {}

    async def release(self, key_name: str, stream_id: str) -> None:
        self.released[stream_id] = self.released.get(stream_id, 0) + 1
        await super().release(key_name, stream_id)


async def test_a_thousand_streams_ending_every_way_hold_no_slot() -> None:
    limiter = CountingLimiter()
    settings = StreamsSection(max_retries=0, drain_timeout=0.05)
    manager = StreamManager(MemoryStreamLog(max_bytes=1 << 20, ttl=60.0), settings, limiter)
    started: list[tuple[str, str | None]] = []
    for n, (model, then) in zip(range(1000), itertools.cycle(ENDINGS[:-1]), strict=False):
        provider = Crashing() if model == "crash" else SimProvider()
        request = GenerationRequest(model, (Message("user", f"q{n}"),))
        stream_id = await manager.start(request, provider, f"sim/{model}", key=KEY)
        started.append((stream_id, then))
    assert limiter.slots_held() == 1000
    with pytest.raises(KeyOverLimit):  # every slot is taken
        await manager.start(GenerationRequest("fast", ()), SimProvider(), "sim/fast", key=KEY)
    for stream_id, then in started:
        if then == "cancel":
            await manager.cancel(stream_id)
        elif then == "disconnect":
            async with manager.subscription(stream_id):
                pass
    for _ in range(500):  # the fast ones end within a few loop turns
        if limiter.slots_held() <= 1000 - 100:
            break
        await asyncio.sleep(0.01)
    last = GenerationRequest("slow-start", (Message("user", "q"),))
    await manager.start(last, SimProvider(), "sim/slow-start", key=KEY)  # a slot came back
    await manager.drain()  # ends the last with server_shutdown
    await asyncio.sleep(0)
    assert manager.active_count == 0
    assert limiter.slots_held() == 0
    assert len(limiter.released) == 1001
    assert set(limiter.released.values()) == {1}  # each given back once, never twice
