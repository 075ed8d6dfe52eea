"""The subscription engine: replay, then follow, through the Writer port."""

from __future__ import annotations

import asyncio

import pytest

from tokenrelay.events import Event, make_event, start_event, token_event
from tokenrelay.sse import PING
from tokenrelay.streams import subscription as subscription_module
from tokenrelay.streams.log import StreamMeta
from tokenrelay.streams.log_memory import MemoryStreamLog
from tokenrelay.streams.subscription import Subscription
from tokenrelay.wire.native import NativeEncoder

pytestmark = pytest.mark.anyio

SID = "str_sub"
ENCODER = NativeEncoder(SID)


class FakeWriter:
    """Writes at once unless `full` (a full socket): then holds until the socket drains."""

    def __init__(self, *, always_holds: bool = False) -> None:
        self.written: list[bytes] = []
        self.held: list[bytes] = []
        self.full = False
        self.always_holds = always_holds  # as the ASGI writer: every write awaits a send
        self.drained = asyncio.Event()
        self.drained.set()

    def write_now(self, data: bytes) -> bool:
        if self.held or self.full or self.always_holds:
            self.held.append(data)
            return False
        self.written.append(data)
        return True

    async def drain(self) -> None:
        await self.drained.wait()
        self.written += self.held
        self.held = []


async def new_log(*events: Event) -> MemoryStreamLog:
    log = MemoryStreamLog(max_bytes=1 << 24, ttl=60.0)
    await log.create(SID, StreamMeta(SID, "sim/fast"))
    for event in events or (start_event(1, SID, "m"),):
        log.append_nowait(SID, event)
    return log


def subscription(log: MemoryStreamLog, writer: FakeWriter, **options: float) -> Subscription:
    limits = {"keepalive": 5.0, "send_timeout": 5.0, **options}
    return Subscription(log, SID, 0, ENCODER, writer, **limits)


def done(seq: int) -> Event:
    return make_event(seq, "done", finish_reason="stop", token_count=seq - 2)


def encoded(*events: Event) -> bytes:
    return b"".join(ENCODER.encode_one(event) for event in events)


async def test_it_replays_then_writes_live_tokens_inside_the_append() -> None:
    log, writer = await new_log(), FakeWriter()
    task = asyncio.create_task(subscription(log, writer).run())
    await asyncio.sleep(0.01)  # replayed the start, attached, asleep
    assert b"".join(writer.written) == encoded(start_event(1, SID, "m"))
    log.append_nowait(SID, token_event(2, "live"))
    # Written by the append itself, before the subscription's task has run again.
    assert writer.written[-1] == encoded(token_event(2, "live"))
    log.append_nowait(SID, done(3))
    assert await asyncio.wait_for(task, 1.0) is True
    assert b"".join(writer.written) == encoded(
        start_event(1, SID, "m"), token_event(2, "live"), done(3)
    )


async def test_every_write_awaited_as_an_asgi_send_gets_everything_in_order() -> None:
    log, writer = await new_log(), FakeWriter(always_holds=True)
    task = asyncio.create_task(subscription(log, writer).run())
    events = [start_event(1, SID, "m")]
    for seq in range(2, 40):
        events.append(token_event(seq, f"t{seq}"))
        log.append_nowait(SID, events[-1])
        if seq % 7 == 0:
            await asyncio.sleep(0)  # some arrive one by one, some in bursts
    events.append(done(40))
    log.append_nowait(SID, events[-1])
    assert await asyncio.wait_for(task, 1.0) is True
    assert b"".join(writer.written) == encoded(*events)


async def test_a_full_socket_holds_writes_and_the_producer_goes_on() -> None:
    log, writer = await new_log(), FakeWriter()
    task = asyncio.create_task(subscription(log, writer).run())
    await asyncio.sleep(0.01)
    writer.full, writer.drained = True, asyncio.Event()
    events = [token_event(seq, "x" * 1000) for seq in range(2, 600)]  # past MAX_HELD
    for event in events:
        log.append_nowait(SID, event)  # never waits for the client
    assert sum(len(b) for b in writer.held) <= subscription_module.MAX_HELD + 2000
    writer.full = False
    writer.drained.set()
    log.append_nowait(SID, done(600))
    assert await asyncio.wait_for(task, 1.0) is True
    assert b"".join(writer.written) == encoded(start_event(1, SID, "m"), *events, done(600))


async def test_a_client_that_does_not_drain_in_time_is_dropped() -> None:
    log, writer = await new_log(), FakeWriter()
    task = asyncio.create_task(subscription(log, writer, send_timeout=0.05).run())
    await asyncio.sleep(0.01)
    writer.full, writer.drained = True, asyncio.Event()
    log.append_nowait(SID, token_event(2, "stuck"))
    assert await asyncio.wait_for(task, 1.0) is False
    log.append_nowait(SID, token_event(3, "the producer is unharmed"))


async def test_keepalive_pings_an_idle_client_but_not_a_busy_one() -> None:
    log, writer = await new_log(), FakeWriter()
    task = asyncio.create_task(subscription(log, writer, keepalive=0.05).run())
    for seq in range(2, 8):  # a token every 20 ms: never idle for 50 ms
        await asyncio.sleep(0.02)
        log.append_nowait(SID, token_event(seq, "t"))
    assert PING not in writer.written
    await asyncio.sleep(0.12)  # then silence
    assert PING in writer.written
    log.append_nowait(SID, done(8))
    assert await asyncio.wait_for(task, 1.0) is True


async def test_a_reader_that_had_the_ending_gets_nothing_more() -> None:
    log = await new_log(start_event(1, SID, "m"), token_event(2, "a"), done(3))
    writer = FakeWriter()
    ended = Subscription(log, SID, 3, ENCODER, writer, keepalive=5.0, send_timeout=5.0)
    assert await asyncio.wait_for(ended.run(), 1.0) is True
    assert writer.written == []
    replay = Subscription(log, SID, 1, ENCODER, writer, keepalive=5.0, send_timeout=5.0)
    assert await asyncio.wait_for(replay.run(), 1.0) is True
    assert b"".join(writer.written) == encoded(token_event(2, "a"), done(3))


async def test_a_shared_reader_may_hand_over_events_it_has_and_a_gap_is_read() -> None:
    """Redis's shared reader can be behind or ahead of a follower's cursor."""
    log, writer = await new_log(start_event(1, SID, "m"), token_event(2, "a")), FakeWriter()
    follower = Subscription(log, SID, 2, ENCODER, writer, keepalive=5.0, send_timeout=5.0)
    assert follower.push(token_event(2, "a"))  # already had it: skipped, still attached
    assert writer.written == []
    assert not follower.push(token_event(4, "gap"))  # 3 is missing: detach, read the log
    assert writer.written == []
    assert follower.cursor == 2


async def test_a_broken_follower_cannot_fail_the_producer() -> None:
    class Broken:
        interrupted = False

        def push(self, event: Event) -> bool:
            raise ZeroDivisionError

        def interrupt(self) -> None:
            self.interrupted = True

    log = await new_log()
    broken = Broken()
    assert log.attach(SID, 1, broken)
    log.append_nowait(SID, token_event(2, "x"))  # logged, not raised
    log.append_nowait(SID, token_event(3, "y"))
    assert broken.interrupted
    assert (await log.status(SID)).last_seq == 3


async def test_regression_the_first_ping_comes_keepalive_after_following_begins() -> None:
    """The keep-alive timer ran from the subscription's start and the replayed writes counted
    as news, so the first ping on a silent stream came after two intervals, not one."""
    log, writer = await new_log(), FakeWriter()
    task = asyncio.create_task(subscription(log, writer, keepalive=0.2).run())
    await asyncio.sleep(0.3)  # one interval and a half after the replay of `start`
    assert PING in writer.written
    log.append_nowait(SID, done(2))
    assert await asyncio.wait_for(task, 1.0) is True
