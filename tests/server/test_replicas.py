"""Several replicas, one Redis: resume anywhere, cancel from anywhere, survive a kill -9."""

from __future__ import annotations

import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.abort import open_get, open_request, read_until, upstream_gone_after
from tests.conftest import sse_events
from tests.realserver import MockUpstream, RealServer, real_server

pytestmark = pytest.mark.server


def _config(redis_url: str, mock: MockUpstream) -> str:
    return f"""
[redis]
url = "{redis_url}"
lease = 1.0
[streams]
keepalive = 0.3
drain_timeout = 1.0
resume_window = 10.0
[sim]
ttft = 0.05
tokens_per_second = 100.0
[upstreams.openai]
kind = "openai"
base_url = "{mock.url}/v1"
"""


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, mock: MockUpstream
) -> Iterator[tuple[RealServer, RealServer]]:
    config = _config(redis_url, mock)
    with (
        real_server(tmp_path_factory.mktemp("a"), config) as a,
        real_server(tmp_path_factory.mktemp("b"), config) as b,
    ):
        yield a, b


def _stream_id(head: bytes) -> str:
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"x-stream-id:"):
            return line.split(b":", 1)[1].strip().decode()
    raise AssertionError(f"no stream id in {head!r}")


def test_start_on_a_resume_on_b_exactly(pair: tuple[RealServer, RealServer]) -> None:
    a, b = pair
    body = {
        "message": "Explain TCP",
        "model": "sim/default",
        "max_tokens": 80,
        "on_disconnect": "detach",
    }
    with httpx.stream("POST", f"{a.url}/api/chat/stream", json=body, timeout=30) as response:
        stream_id = response.headers["x-stream-id"]
        raw = b""
        for chunk in response.iter_raw():
            raw += chunk
            if raw.count(b"\n\n") >= 6:
                break
    first = sse_events(raw[: raw.rindex(b"\n\n") + 2])
    rest = sse_events(
        httpx.get(
            f"{b.url}/api/streams/{stream_id}",
            headers={"last-event-id": first[-1]["_id"]},
            timeout=30,
        ).content
    )
    events = first + rest
    assert [e["_id"] for e in events] == [f"{stream_id}:{i}" for i in range(1, len(events) + 1)]
    assert events[-1]["type"] == "done"
    assert events[-1]["token_count"] == 80
    assert sum(e["type"] == "start" for e in events) == 1


def test_an_event_a_local_reader_has_is_one_any_replica_can_replay(
    pair: tuple[RealServer, RealServer],
) -> None:
    """The durability guarantee of local readers served from memory: a reader on the
    producing replica gets an event only once Redis has it, so the id it holds is always one
    the other replica can resume from (never "an id from the future", a 400)."""
    a, b = pair
    body = {"message": "Explain TCP", "model": "sim/default", "max_tokens": 60}
    with httpx.stream("POST", f"{a.url}/api/chat/stream", json=body, timeout=30) as response:
        stream_id = response.headers["x-stream-id"]
        checked = 0
        for line in response.iter_lines():
            if not line.startswith("id: "):
                continue
            held = line[4:]
            if held.endswith((":3", ":10", ":25", ":40")):  # at once, while it streams
                probe = httpx.get(
                    f"{b.url}/api/streams/{stream_id}",
                    params={"last_event_id": held},
                    timeout=30,
                    headers={"accept": "text/event-stream"},
                )
                assert probe.status_code in (200, 204), probe.text
                checked += 1
    assert checked == 4


def test_cancel_on_b_stops_the_upstream_on_a(
    pair: tuple[RealServer, RealServer], mock: MockUpstream
) -> None:
    a, b = pair
    model = f"default+endless+tag-{uuid.uuid4().hex[:8]}"
    sock = open_request(a.url, "/api/chat/stream", {"message": "x", "model": f"openai/{model}"})
    head = read_until(sock, b'"type":"token"')
    stream_id = _stream_id(head)
    sent_at = time.time()
    r = httpx.delete(f"{b.url}/api/streams/{stream_id}", timeout=10)
    assert r.status_code == 202
    assert upstream_gone_after(mock, model, sent_at) < 1.0
    tail = read_until(sock, b'"type":"cancelled"')
    assert b'"reason":"cancelled_by_request"' in tail
    sock.close()


@pytest.mark.parametrize("attempt", range(5))  # it failed 1 run in 5 before the fix
def test_last_subscriber_leaving_on_b_cancels_on_a(
    pair: tuple[RealServer, RealServer], mock: MockUpstream, attempt: int
) -> None:
    """Regression: readers cancelled inside redis-py wedged its pool, and the cancel was lost."""
    a, b = pair
    model = f"default+endless+tag-{uuid.uuid4().hex[:8]}"
    on_a = open_request(a.url, "/api/chat/stream", {"message": "x", "model": f"openai/{model}"})
    stream_id = _stream_id(read_until(on_a, b'"type":"token"'))
    on_b = open_get(b.url, f"/api/streams/{stream_id}")
    read_until(on_b, b'"type":"token"')
    on_a.close()  # one reader left, on B: the stream goes on
    time.sleep(0.3)
    assert [e for e in mock.record() if e["model"] == model][-1]["outcome"] == "running"
    closed_at = time.time()
    on_b.close()  # the last reader, on another replica than the producer
    assert upstream_gone_after(mock, model, closed_at) < 2.0


@dataclass
class _Follower:
    """A detached stream started on one replica and followed from another."""

    creator: socket.socket
    thread: threading.Thread
    events: list[dict[str, Any]] = field(default_factory=list)


def _start_and_follow(producer: RealServer, follower: RealServer) -> _Follower:
    body: dict[str, object] = {
        "message": "x",
        "model": "sim/default+endless",
        "on_disconnect": "detach",
    }
    creator = open_request(producer.url, "/api/chat/stream", body)
    stream_id = _stream_id(read_until(creator, b'"type":"token"'))
    events: list[dict[str, Any]] = []

    def follow() -> None:
        with httpx.stream("GET", f"{follower.url}/api/streams/{stream_id}", timeout=30) as r:
            events.extend(sse_events(r.read()))

    thread = threading.Thread(target=follow)
    thread.start()
    time.sleep(0.3)
    return _Follower(creator, thread, events)


def _ended_once_with(events: list[dict[str, Any]], error_type: str) -> None:
    assert events[-1]["type"] == "error"
    assert events[-1]["error_type"] == error_type
    assert events[-1]["retryable"] is True
    assert sum(e["type"] in ("done", "error", "cancelled") for e in events) == 1


def test_kill_9_of_the_producer_ends_followers_with_producer_lost(
    tmp_path: Path, redis_url: str, mock: MockUpstream, pair: tuple[RealServer, RealServer]
) -> None:
    with real_server(tmp_path, _config(redis_url, mock)) as doomed:
        follower = _start_and_follow(doomed, pair[1])
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait()
        follower.creator.close()
        follower.thread.join(15)
    assert not follower.thread.is_alive(), "a follower hung after its producer died"
    assert sum(e["type"] == "token" for e in follower.events) > 0
    _ended_once_with(follower.events, "producer_lost")


def test_sigterm_on_the_producer_ends_followers_elsewhere_with_a_retryable_error(
    tmp_path: Path, redis_url: str, mock: MockUpstream, pair: tuple[RealServer, RealServer]
) -> None:
    with real_server(tmp_path, _config(redis_url, mock)) as leaving:
        follower = _start_and_follow(leaving, pair[1])
        assert leaving.terminate() in (0, -15)
        follower.creator.close()
        follower.thread.join(15)
    assert not follower.thread.is_alive()
    _ended_once_with(follower.events, "server_shutdown")
