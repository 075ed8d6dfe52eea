"""Live delivery: the producer's append writes a caught-up subscriber's tokens itself."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.types import Message as ASGIMessage

from tokenrelay.events import Event, make_event, start_event, token_event
from tokenrelay.server.eager_send import EagerSender
from tokenrelay.server.live import LiveWriter
from tokenrelay.streams.log import StreamMeta
from tokenrelay.streams.log_memory import MemoryStreamLog
from tokenrelay.wire.native import NativeEncoder

pytestmark = pytest.mark.anyio

SID = "str_live"


class FakeServer:
    """An ASGI `send` like uvicorn's: writes at once, waits only while `paused` is set."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.paused: asyncio.Future[None] | None = None
        self.cleaned_up = 0
        self.fail = False

    async def send(self, message: ASGIMessage) -> None:
        if self.fail:
            raise RuntimeError("the connection broke")
        try:
            if self.paused is not None:
                await self.paused
            self.written.append(message["body"])
        finally:
            self.cleaned_up += 1

    async def wrapped(self, message: ASGIMessage) -> None:  # as middleware wraps send
        await self.send(message)


def _message(body: bytes) -> ASGIMessage:
    return {"type": "http.response.body", "body": body, "more_body": True}


async def test_a_send_that_does_not_wait_finishes_inside_send_now() -> None:
    server = FakeServer()
    sender = EagerSender(server.wrapped)
    for body in (b"a", b"b"):
        assert sender.send_now(_message(body)) is None
    assert server.written == [b"a", b"b"]


async def test_a_send_that_waits_is_finished_by_whoever_awaits_it() -> None:
    server = FakeServer()
    sender = EagerSender(server.wrapped)
    server.paused = asyncio.get_running_loop().create_future()
    pending = sender.send_now(_message(b"late"))
    assert pending is not None
    assert server.written == []
    finisher = asyncio.ensure_future(_await(pending))
    await asyncio.sleep(0)
    server.paused.set_result(None)
    server.paused = None
    await finisher
    assert server.written == [b"late"]
    assert sender.send_now(_message(b"next")) is None  # the same sender goes on
    assert server.written == [b"late", b"next"]


async def test_cancelling_a_waiting_send_cancels_inside_it() -> None:
    server = FakeServer()
    server.paused = asyncio.get_running_loop().create_future()
    pending = EagerSender(server.wrapped).send_now(_message(b"stuck"))
    assert pending is not None
    finisher = asyncio.ensure_future(_await(pending))
    await asyncio.sleep(0)
    finisher.cancel()  # what send_timeout does
    with pytest.raises(asyncio.CancelledError):
        await finisher
    assert server.paused.cancelled()
    assert server.cleaned_up == 1
    assert server.written == []


async def test_a_failing_send_raises_to_the_caller() -> None:
    server = FakeServer()
    server.fail = True
    with pytest.raises(RuntimeError, match="broke"):
        EagerSender(server.wrapped).send_now(_message(b"x"))


async def _await(awaitable: Any) -> None:
    await awaitable


async def _log_at_start() -> MemoryStreamLog:
    log = MemoryStreamLog(max_bytes=1 << 20, ttl=60.0)
    await log.create(SID, StreamMeta(SID, "sim/fast"))
    log.append_nowait(SID, start_event(1, SID, "m"))
    return log


def _attached(log: MemoryStreamLog, server: FakeServer) -> LiveWriter:
    """A writer following the log from seq 1, as a caught-up subscriber's is."""
    live = LiveWriter(server.send, NativeEncoder(SID))
    live.start(1)
    assert log.attach(SID, 1, live)
    return live


async def test_tokens_are_written_by_the_append_while_the_subscriber_sleeps() -> None:
    log, server = await _log_at_start(), FakeServer()
    live = _attached(log, server)
    sleeper = asyncio.ensure_future(live.sleep(keepalive=5.0))
    await asyncio.sleep(0)
    for seq in (2, 3):
        log.append_nowait(SID, token_event(seq, f"t{seq}"))
    assert server.written == [
        b'id: str_live:2\ndata: {"type":"token","content":"t2"}\n\n',
        b'id: str_live:3\ndata: {"type":"token","content":"t3"}\n\n',
    ]
    assert not sleeper.done()
    assert live.cursor == 3
    log.append_nowait(SID, make_event(4, "done", finish_reason="stop", token_count=2))
    await asyncio.wait_for(sleeper, 1.0)  # the ending is the subscriber's to send
    assert len(server.written) == 2
    assert live.cursor == 3
    assert not live.idle


async def test_a_full_socket_hands_the_write_back_and_the_producer_goes_on() -> None:
    log, server = await _log_at_start(), FakeServer()
    live = _attached(log, server)
    sleeper = asyncio.ensure_future(live.sleep(keepalive=5.0))
    await asyncio.sleep(0)
    server.paused = asyncio.get_running_loop().create_future()
    log.append_nowait(SID, token_event(2, "stuck"))
    log.append_nowait(SID, token_event(3, "logged only"))  # detached: not handed over
    await asyncio.wait_for(sleeper, 1.0)
    pending = live.take_pending()
    assert pending is not None
    assert live.cursor == 2
    server.paused.set_result(None)
    await pending
    assert len(server.written) == 1
    assert [e.seq for e in await log.read(SID, live.cursor, wait=0)] == [3]


async def test_a_failed_write_is_kept_for_the_subscriber_and_the_producer_is_unharmed() -> None:
    log, server = await _log_at_start(), FakeServer()
    live = _attached(log, server)
    server.fail = True
    log.append_nowait(SID, token_event(2, "x"))  # does not raise here
    assert isinstance(live.error, RuntimeError)
    log.append_nowait(SID, token_event(3, "y"))
    assert (await log.status(SID)).last_seq == 3


async def test_keepalive_wakes_an_idle_subscriber_but_not_a_busy_one() -> None:
    log, server = await _log_at_start(), FakeServer()
    live = _attached(log, server)
    sleeper = asyncio.ensure_future(live.sleep(keepalive=0.05))
    for seq in range(2, 6):  # a token every 20 ms: never idle for 50 ms
        await asyncio.sleep(0.02)
        log.append_nowait(SID, token_event(seq, "t"))
    assert not sleeper.done()
    await asyncio.wait_for(sleeper, 1.0)  # then silence: woken to ping
    assert live.idle


async def test_a_broken_follower_cannot_fail_the_producer() -> None:
    class Broken:
        interrupted = False

        def push(self, event: Event) -> bool:
            raise ZeroDivisionError

        def interrupt(self) -> None:
            self.interrupted = True

    log = await _log_at_start()
    broken = Broken()
    assert log.attach(SID, 1, broken)
    log.append_nowait(SID, token_event(2, "x"))  # logged, not raised
    log.append_nowait(SID, token_event(3, "y"))
    assert broken.interrupted
    assert (await log.status(SID)).last_seq == 3
