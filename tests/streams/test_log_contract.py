"""The StreamLog contract (see streams/log.py), run against every backend."""

from __future__ import annotations

import asyncio
import functools
import gc
import tracemalloc
from collections.abc import AsyncIterator, Callable

import pytest

from tokenrelay.errors import StoreUnavailable, StreamExpired, StreamTooLarge, UnknownStream
from tokenrelay.events import Event, cancelled_event, start_event, token_event
from tokenrelay.metrics import METRICS
from tokenrelay.streams.log import StreamLog, StreamMeta, StreamStatus
from tokenrelay.streams.log_memory import MemoryStreamLog
from tokenrelay.streams.log_redis import READ_SLICE, TAIL, RedisStreamLog
from tokenrelay.streams.manager import new_stream_id

pytestmark = pytest.mark.anyio

SID = "str_test"


MakeRedisLog = Callable[..., RedisStreamLog]


@pytest.fixture(params=["redis", "redis-cluster"])
def make_redis_log(request: pytest.FixtureRequest) -> MakeRedisLog:
    """Redis logs on one server, or on a cluster of three (the keys are hash-tagged, so one
    stream's keys share a slot; the writer's script call is per stream there)."""
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        return functools.partial(RedisStreamLog, url)
    url = request.getfixturevalue("redis_cluster_url")
    return functools.partial(RedisStreamLog, url, cluster=True)


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
async def log(request: pytest.FixtureRequest) -> AsyncIterator[StreamLog]:
    backend: StreamLog
    if request.param == "memory":
        backend = MemoryStreamLog(max_bytes=4096, ttl=60.0, sweep_interval=0.0)
    else:
        cluster = request.param == "redis-cluster"
        url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
        backend = RedisStreamLog(url, max_bytes=4096, ttl=60.0, cluster=cluster)
        await backend.redis.flushdb()
    await backend.create(SID, StreamMeta(SID, "sim/fast"))
    yield backend
    await backend.close()


async def test_read_returns_events_after_the_cursor_in_order(log: StreamLog) -> None:
    await log.append(SID, start_event(1, SID, "m"))
    for seq in range(2, 6):
        await log.append(SID, token_event(seq, f"t{seq}"))
    await log.flush()
    assert [e.seq for e in await log.read(SID, 0, wait=0)] == [1, 2, 3, 4, 5]
    assert [e.seq for e in await log.read(SID, 3, wait=0)] == [4, 5]


async def test_append_nowait_stores_wakes_and_refuses_like_append(log: StreamLog) -> None:
    # What a timer callback uses (held words): no await anywhere, yet readers see it in order.
    log.append_nowait(SID, start_event(1, SID, "m"))
    reader = asyncio.create_task(log.read(SID, 1, wait=5.0))
    await asyncio.sleep(0.01)
    log.append_nowait(SID, token_event(2, "x"))
    assert [e.seq for e in await asyncio.wait_for(reader, 1.0)] == [2]
    with pytest.raises(ValueError, match="seq"):
        log.append_nowait(SID, token_event(5, "gap"))
    await log.flush()
    assert [e.seq for e in await log.read(SID, 0, wait=0)] == [1, 2]


async def test_read_waits_for_the_next_append(log: StreamLog) -> None:
    await log.append(SID, start_event(1, SID, "m"))
    reader = asyncio.create_task(log.read(SID, 1, wait=5.0))
    await asyncio.sleep(0.01)
    assert not reader.done()
    await log.append(SID, token_event(2, "x"))
    assert [e.seq for e in await asyncio.wait_for(reader, 1.0)] == [2]


async def test_read_times_out_empty(log: StreamLog) -> None:
    assert await log.read(SID, 0, wait=0.01) == []


async def test_several_readers_are_all_woken(log: StreamLog) -> None:
    readers = [asyncio.create_task(log.read(SID, 0, wait=5.0)) for _ in range(3)]
    await asyncio.sleep(0.01)
    await log.append(SID, start_event(1, SID, "m"))
    results = await asyncio.wait_for(asyncio.gather(*readers), 1.0)
    assert [[e.seq for e in r] for r in results] == [[1], [1], [1]]


async def test_a_cancelled_reader_does_not_disturb_another(log: StreamLog) -> None:
    quitter = asyncio.create_task(log.read(SID, 0, wait=5.0))
    stayer = asyncio.create_task(log.read(SID, 0, wait=5.0))
    await asyncio.sleep(0.01)
    quitter.cancel()
    await log.append(SID, start_event(1, SID, "m"))
    assert len(await asyncio.wait_for(stayer, 1.0)) == 1


async def test_sequence_gaps_are_refused(log: StreamLog) -> None:
    with pytest.raises(ValueError, match="seq"):
        await log.append(SID, token_event(2, "x"))


async def test_nothing_after_the_terminal_event(log: StreamLog) -> None:
    await log.append(SID, start_event(1, SID, "m"))
    await log.append(SID, cancelled_event(2, "test"))
    with pytest.raises(ValueError, match="ended"):
        await log.append(SID, token_event(3, "late"))
    status = await log.status(SID)
    assert (status.last_seq, status.ended) == (2, True)
    assert await log.read(SID, 2, wait=0.05) == []


async def test_size_cap_refuses_tokens_but_accepts_the_ending(log: StreamLog) -> None:
    await log.append(SID, start_event(1, SID, "m"))
    with pytest.raises(StreamTooLarge):
        await log.append(SID, token_event(2, "x" * 5000))
    await log.flush()
    assert (await log.status(SID)).last_seq == 1
    await log.append(SID, cancelled_event(2, "too big"))
    assert (await log.status(SID)).ended


async def test_unknown_streams(log: StreamLog) -> None:
    assert await log.meta("str_missing") is None
    with pytest.raises(UnknownStream):
        await log.read("str_missing", 0, wait=0)
    with pytest.raises(UnknownStream):
        await log.status("str_missing")


async def test_duplicate_create_is_refused(log: StreamLog) -> None:
    with pytest.raises(ValueError, match="exists"):
        await log.create(SID, StreamMeta(SID, "m"))


async def test_finished_streams_expire_after_ttl() -> None:
    log = MemoryStreamLog(max_bytes=4096, ttl=0.05, sweep_interval=0.0)
    await log.create(SID, StreamMeta(SID, "m"))
    await log.append(SID, cancelled_event(1, "test"))
    assert await log.meta(SID) is not None
    await asyncio.sleep(0.08)
    assert await log.meta(SID) is None
    await log.create("str_other", StreamMeta("str_other", "m"))  # sweeps
    assert len(log) == 1


async def test_the_sweep_keeps_what_ended_later_and_streams_still_running() -> None:
    log = MemoryStreamLog(max_bytes=4096, ttl=0.05, sweep_interval=0.0)
    for sid in ("str_first", "str_running", "str_late"):
        await log.create(sid, StreamMeta(sid, "m"))
    await log.append("str_first", cancelled_event(1, "test"))
    await asyncio.sleep(0.035)
    await log.append("str_late", cancelled_event(1, "test"))
    await asyncio.sleep(0.03)  # str_first has expired, str_late has not
    await log.create("str_sweeper", StreamMeta("str_sweeper", "m"))
    with pytest.raises(StreamExpired):
        await log.status("str_first")
    assert await log.status("str_late") == StreamStatus(1, True)
    assert await log.status("str_running") == StreamStatus(0, False)
    assert len(log) == 3


async def test_ended_streams_stay_under_their_byte_cap_oldest_going_first() -> None:
    """What ended streams hold together is capped: past it the oldest go, and a resume of
    one answers as expired (410), as after its TTL. The metrics show the bytes and evictions."""
    events = [start_event(1, "x", "m"), *(token_event(i, "word") for i in range(2, 40))]
    one = sum(len(e.data) for e in events) + len(cancelled_event(40, "test").data)
    log = MemoryStreamLog(max_bytes=1 << 20, ttl=600.0, max_ended_bytes=3 * one)
    evicted_before = METRICS.ended_evicted
    for n in range(5):
        sid = f"str_{n}"
        await log.create(sid, StreamMeta(sid, "m"))
        for event in events:
            await log.append(sid, event)
        await log.append(sid, cancelled_event(40, "test"))
    for sid in ("str_0", "str_1"):
        with pytest.raises(StreamExpired):
            await log.read(sid, 0, wait=0)
    for sid in ("str_2", "str_3", "str_4"):
        assert len(await log.read(sid, 0, wait=0)) == 40
    assert METRICS.ended_bytes == 3 * one
    assert METRICS.ended_evicted - evicted_before == 2


async def test_an_ended_stream_leaves_nothing_for_the_garbage_collector() -> None:
    """A replica keeps hundreds of thousands of ended streams for their TTL; every collection
    of the oldest generation would walk them all."""
    log = MemoryStreamLog(max_bytes=1 << 20, ttl=600.0)
    sids = [f"str_gc{i}" for i in range(200)]
    gc.collect()
    before = len(gc.get_objects())
    for sid in sids:
        await log.create(sid, StreamMeta(sid, "m", "owner"))
        await log.append(sid, start_event(1, sid, "m"))
        for seq in range(2, 12):
            await log.append(sid, token_event(seq, "word"))
        await log.append(sid, cancelled_event(12, "test"))
    gc.collect()
    assert len(gc.get_objects()) - before < len(sids) // 2  # a live entry is 6 objects
    # and everything is still there, for a late reader
    events = await log.read(sids[-1], 0, wait=0)
    assert [e.type for e in events] == ["start"] + ["token"] * 10 + ["cancelled"]
    assert await log.meta(sids[0]) == StreamMeta(sids[0], "m", "owner")
    assert not log.attach(sids[0], 12, _NeverFollower())


async def test_an_ended_stream_keeps_little_more_than_its_payloads() -> None:
    """Ended streams are kept for the TTL: 10 minutes of a busy replica's answers. A bytes
    object per event cost 2.2 times the payloads; joined, it is about 1.2."""
    log = MemoryStreamLog(max_bytes=1 << 20, ttl=600.0)
    sids = [f"str_mem{i}" for i in range(200)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        payloads = 0
        for sid in sids:
            await log.create(sid, StreamMeta(sid, "m"))
            events = [start_event(1, sid, "m")]
            events += [token_event(seq, f" word{seq % 50}") for seq in range(2, 202)]
            events.append(cancelled_event(202, "test"))
            for event in events:
                await log.append(sid, event)
            payloads += sum(len(event.data) for event in events)
            del events
        gc.collect()
        kept = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    assert kept < 1.35 * payloads


async def test_an_ended_stream_replays_exactly_from_every_cursor() -> None:
    log = MemoryStreamLog(max_bytes=1 << 20, ttl=600.0)
    await log.create(SID, StreamMeta(SID, "m"))
    events = [start_event(1, SID, "m"), token_event(2, "a"), token_event(3, "")]
    events += [token_event(4, "é\n"), cancelled_event(5, "test")]
    for event in events:
        await log.append(SID, event)
    for after in range(len(events) + 2):
        assert await log.read(SID, after, wait=0) == events[after:]
    assert await log.status(SID) == StreamStatus(5, True)


async def test_an_ended_stream_with_a_payload_of_several_lines_replays_exactly() -> None:
    """Payloads are one line of JSON by construction; one that is not must not be split."""
    log = MemoryStreamLog(max_bytes=1 << 20, ttl=600.0)
    await log.create(SID, StreamMeta(SID, "m"))
    events = [start_event(1, SID, "m"), Event(2, "token", b'{"type":"token",\n"content":"a"}')]
    events.append(cancelled_event(3, "test"))
    for event in events:
        await log.append(SID, event)
    assert await log.read(SID, 0, wait=0) == events


class _NeverFollower:
    def push(self, event: Event) -> bool:
        raise AssertionError("an ended stream has nothing to follow")

    def interrupt(self) -> None:
        raise AssertionError("an ended stream has nothing to follow")


async def test_expired_streams_stay_distinguishable_from_unknown_ones() -> None:
    log = MemoryStreamLog(max_bytes=4096, ttl=0.02, sweep_interval=0.0)
    await log.create(SID, StreamMeta(SID, "m"))
    await log.append(SID, cancelled_event(1, "test"))
    await asyncio.sleep(0.04)
    await log.create("str_sweeper", StreamMeta("str_sweeper", "m"))  # sweeps SID away
    with pytest.raises(StreamExpired):
        await log.status(SID)
    with pytest.raises(UnknownStream) as caught:
        await log.status("str_never")
    assert not isinstance(caught.value, StreamExpired)


async def test_subscribers_are_counted(log: StreamLog) -> None:
    assert await log.add_subscriber(SID) == 1
    assert await log.add_subscriber(SID) == 2
    assert await log.remove_subscriber(SID) == 1
    assert await log.remove_subscriber(SID) == 0


async def test_metadata_round_trips(log: StreamLog) -> None:
    meta = await log.meta(SID)
    assert meta is not None
    assert (meta.stream_id, meta.model) == (SID, "sim/fast")


async def test_cancelled_redis_readers_return_at_once_and_release_within_a_slice(
    make_redis_log: MakeRedisLog,
) -> None:
    """Cancellation never reaches redis-py (its pool can wedge on a cancelled command, see
    log_redis.py): a cancelled reader returns at once, its call finishes within READ_SLICE,
    and the log keeps answering. The wedge itself is pinned end to end by
    tests/server/test_replicas.py::test_last_subscriber_leaving_on_b_cancels_on_a."""
    log = make_redis_log(max_bytes=1 << 20, ttl=60.0, max_connections=100)
    await log.redis.flushdb()
    await log.create(SID, StreamMeta(SID, "m"))
    readers = [asyncio.create_task(log.read(SID, 0, wait=30.0)) for _ in range(20)]
    await asyncio.sleep(0.05)
    for reader in readers:
        reader.cancel()
    async with asyncio.timeout(0.2):
        results = await asyncio.gather(*readers, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    if log._inflight:
        _, pending = await asyncio.wait(log._inflight, timeout=READ_SLICE + 1.0)
        assert not pending, "a shielded Redis call outlived its slice"
    assert await log.add_subscriber(SID) == 1
    assert (await log.status(SID)).last_seq == 0
    await log.close()


async def test_a_burst_then_the_ending_reads_back_complete_and_in_order(log: StreamLog) -> None:
    """Backends may write asynchronously; the terminal append waits for everything before it."""
    await log.append(SID, start_event(1, SID, "m"))
    for seq in range(2, 100):  # within the fixture's 4 KiB cap
        await log.append(SID, token_event(seq, "x"))
    await log.append(SID, cancelled_event(100, "test"))
    events = await log.read(SID, 0, wait=0)
    assert [e.seq for e in events] == list(range(1, 101))
    assert (await log.status(SID)).ended


class _Recorder:
    """A follower that records what it is handed; refuses more after `keep` events."""

    def __init__(self, keep: int = 1_000) -> None:
        self.seen: list[int] = []
        self.keep = keep
        self.interrupted = False

    def push(self, event: Event) -> bool:
        self.seen.append(event.seq)
        return len(self.seen) < self.keep

    def interrupt(self) -> None:
        self.interrupted = True


async def _until(condition: Callable[[], bool]) -> None:
    """Wait for what a follower is handed: at once in memory, after a shared XREAD in Redis."""
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)


async def test_a_caught_up_follower_gets_each_event_in_order(log: StreamLog) -> None:
    await log.append(SID, start_event(1, SID, "m"))
    await log.flush()
    follower = _Recorder()
    assert log.attach(SID, 1, follower)
    behind = _Recorder()
    if log.attach(SID, 0, behind):  # handed what it lacks at once (a Redis producer's tail)
        assert isinstance(log, RedisStreamLog)
        assert behind.seen == [1]
        log.detach(SID, behind)
    log.append_nowait(SID, token_event(2, "a"))
    if isinstance(log, MemoryStreamLog):
        assert follower.seen == [2]  # delivered inside the append: before it returned
    await _until(lambda: follower.seen == [2])
    assert follower.seen == [2]
    log.detach(SID, follower)
    log.detach(SID, follower)  # twice is fine
    log.append_nowait(SID, token_event(3, "b"))
    await log.flush()
    await asyncio.sleep(0.1)
    assert follower.seen == [2]


async def test_a_redis_producer_hands_a_follower_behind_what_it_lacks_from_its_tail(
    make_redis_log: MakeRedisLog,
) -> None:
    log = make_redis_log(max_bytes=1 << 20, ttl=60)
    try:
        sid = new_stream_id()
        await log.create(sid, StreamMeta(sid, "m", "", 0.0))
        await log.append(sid, start_event(1, sid, "m"))
        for seq in range(2, TAIL + 10):
            log.append_nowait(sid, token_event(seq, "t"))
        await log.flush()
        near, far = _Recorder(), _Recorder()
        assert log.attach(sid, 12, near)  # within the tail: handed 13.. now, then followed
        assert near.seen == list(range(13, TAIL + 10))
        assert not log.attach(sid, 1, far)  # older than the tail: it reads Redis first
        assert far.seen == []
        log.append_nowait(sid, token_event(TAIL + 10, "t"))
        await log.flush()
        assert near.seen[-1] == TAIL + 10
    finally:
        await log.close()


async def test_a_follower_that_declines_is_detached_and_the_log_goes_on(log: StreamLog) -> None:
    await log.append(SID, start_event(1, SID, "m"))
    declining, staying = _Recorder(keep=1), _Recorder()
    assert log.attach(SID, 1, declining)
    assert log.attach(SID, 1, staying)
    for seq in (2, 3):
        log.append_nowait(SID, token_event(seq, "t"))
    await _until(lambda: staying.seen == [2, 3])
    assert declining.seen == [2]
    assert staying.seen == [2, 3]
    await log.close()
    assert staying.interrupted


async def test_a_closed_redis_log_takes_no_followers(make_redis_log: MakeRedisLog) -> None:
    log = make_redis_log(max_bytes=1 << 20, ttl=60.0)
    stream_id = new_stream_id()
    try:
        await log.create(stream_id, StreamMeta(stream_id, "m"))
        await log.append(stream_id, start_event(1, stream_id, "m"))
        follower = _Recorder()
        assert log.attach(stream_id, 1, follower)
    finally:
        await log.close()
    assert follower.interrupted
    assert not log.attach(stream_id, 1, _Recorder())


async def test_of_several_replicas_claiming_a_lost_stream_exactly_one_wins(
    make_redis_log: MakeRedisLog,
) -> None:
    logs = [make_redis_log(max_bytes=1 << 20, ttl=60, lease=1.0) for _ in range(4)]
    producer, claimers = logs[0], logs[1:]
    try:
        sid = new_stream_id()
        await producer.create(sid, StreamMeta(sid, "m", "", 0.0), b'{"plan": 1}')
        await producer.append(sid, start_event(1, sid, "m"))
        await producer.append(sid, token_event(2, "Hel"))
        assert await claimers[0].claim(sid) is None  # its lease is held: nothing to take
        await producer.close()  # dies: its lease is no longer renewed
        await asyncio.sleep(1.1)
        claims = await asyncio.gather(*(log.claim(sid) for log in claimers))
        won = [claim for claim in claims if claim is not None]
        assert len(won) == 1
        handoff, events = won[0]
        assert handoff == b'{"plan": 1}'
        assert [event.seq for event in events] == [1, 2]
        winner = claimers[claims.index(won[0])]
        winner.append_nowait(sid, token_event(3, "lo"))  # it produces the stream now
        await winner.append(sid, cancelled_event(4, "x"))
        status = await claimers[0].status(sid)
        assert status == StreamStatus(4, True)
        assert await claimers[0].claim(sid) is None  # ended: nothing to take
    finally:
        for log in claimers:
            await log.close()


async def test_a_stream_created_without_a_handoff_is_never_claimed(
    make_redis_log: MakeRedisLog,
) -> None:
    producer = make_redis_log(max_bytes=1 << 20, ttl=60, lease=0.2)
    other = make_redis_log(max_bytes=1 << 20, ttl=60, lease=0.2)
    try:
        sid = new_stream_id()
        await producer.create(sid, StreamMeta(sid, "m", "", 0.0))
        await producer.append(sid, start_event(1, sid, "m"))
        await producer.close()
        await asyncio.sleep(0.3)
        assert await other.claim(sid) is None
        status = await other.status(sid)  # a reader finds it lost, as without takeover
        assert status == StreamStatus(2, True)
    finally:
        await other.close()


async def test_a_producer_that_lost_its_stream_writes_no_more_of_it(
    make_redis_log: MakeRedisLog,
) -> None:
    """Its lease lapsed (an outage, a long pause) and another replica took the stream over, or
    a reader ended it as lost: what it appends later is refused, never written beside the
    successor's events, and its lease renewals do not take the stream back."""
    old, new, reader = (make_redis_log(max_bytes=1 << 20, ttl=60, lease=1.0) for _ in range(3))
    try:
        taken, lost = new_stream_id(), new_stream_id()
        for sid, handoff in ((taken, b"{}"), (lost, b"")):
            await old.create(sid, StreamMeta(sid, "m", "", 0.0), handoff)
            await old.append(sid, start_event(1, sid, "m"))
        await asyncio.sleep(1.1)
        assert await new.claim(taken) is not None
        assert await reader.status(lost) == StreamStatus(2, True)  # ended: producer_lost
        await old.renew_leases()
        for sid in (taken, lost):
            old.append_nowait(sid, token_event(2, "late"))
        await old.flush()
        for sid in (taken, lost):
            with pytest.raises(StoreUnavailable):
                old.append_nowait(sid, token_event(3, "later"))
        new.append_nowait(taken, token_event(2, "successor"))
        await new.append(taken, cancelled_event(3, "x"))
        events = await reader.read(taken, 0, wait=0)
        assert [(e.seq, e.type) for e in events] == [(1, "start"), (2, "token"), (3, "cancelled")]
        assert b"successor" in events[1].data
        assert [e.type for e in await reader.read(lost, 0, wait=0)] == ["start", "error"]
    finally:
        for log in (old, new, reader):
            await log.close()
