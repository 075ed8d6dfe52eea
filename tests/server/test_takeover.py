"""A replica dies mid-stream; with `on_producer_lost = "continue"` another one takes the stream
over and finishes the answer: one answer, one seam, exactly one replica producing it."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.abort import open_request, read_until
from tests.conftest import sse_events
from tests.realserver import RealServer, real_server
from tokenrelay.providers.sim_text import compose_answer

pytestmark = pytest.mark.server

QUESTION = "Explain TCP handshakes"
BODY: dict[str, object] = {"message": QUESTION, "model": "sim/default", "on_disconnect": "detach"}
SEAM = "The server generating this answer stopped; another server continues it."


def _config(redis_url: str, on_producer_lost: str = "continue") -> str:
    return f"""
[redis]
url = "{redis_url}"
lease = 1.0
on_producer_lost = "{on_producer_lost}"
[streams]
keepalive = 0.3
[sim]
ttft = 0.05
tokens_per_second = 40.0
jitter = 0.0
"""


@pytest.fixture(scope="module")
def survivors(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> Iterator[tuple[RealServer, RealServer]]:
    config = _config(redis_url)
    with (
        real_server(tmp_path_factory.mktemp("b"), config) as b,
        real_server(tmp_path_factory.mktemp("c"), config) as c,
    ):
        yield b, c


def _text(events: list[dict[str, Any]]) -> str:
    return "".join(e["content"] for e in events if e["type"] == "token")


def _start_then_die(
    tmp_path: Path, config: str, body: dict[str, object] = BODY
) -> tuple[str, list[dict[str, Any]]]:
    """Start a stream on a replica, read its first tokens, kill -9 the replica."""
    with real_server(tmp_path, config) as doomed:
        creator = open_request(doomed.url, "/api/chat/stream", body)
        head = read_until(creator, b'"type":"token"')
        while head.count(b'"type":"token"') < 8:
            head += creator.recv(65536)
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait()
        creator.close()
    return whole_events_of(head)


def whole_events_of(response: bytes) -> tuple[str, list[dict[str, Any]]]:
    """A raw streamed response cut anywhere: its stream id, and the events that came whole."""
    head, _, chunked = response.partition(b"\r\n\r\n")
    stream_id = next(
        line.split(b":", 1)[1].strip().decode()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"x-stream-id:")
    )
    data, rest = b"", chunked
    while rest:  # the chunks' sizes dropped
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0 or len(rest) < size:
            break
        data, rest = data + rest[:size], rest[size + 2 :]
    return stream_id, sse_events(data[: data.rindex(b"\n\n") + 2])


def _resume(server: RealServer, stream_id: str, last_id: str) -> list[dict[str, Any]]:
    """The events after `last_id`; an error before anything else comes as the response's
    status and JSON body (as every stream's does), returned here as that one event."""
    response = httpx.get(
        f"{server.url}/api/streams/{stream_id}", headers={"last-event-id": last_id}, timeout=60
    )
    if response.status_code != 200:
        error = response.json()["error"]
        return [{"type": "error", "status": response.status_code, "error_type": error["type"]}]
    return sse_events(response.content)


def test_a_stream_whose_replica_died_is_continued_by_another_as_one_answer(
    tmp_path: Path, redis_url: str, survivors: tuple[RealServer, RealServer]
) -> None:
    b, _ = survivors
    stream_id, before = _start_then_die(tmp_path, _config(redis_url))
    after = _resume(b, stream_id, before[-1]["_id"])
    events = before + after
    assert [e["_id"] for e in events] == [f"{stream_id}:{i}" for i in range(1, len(events) + 1)]
    seams = [e for e in after if e["type"] == "status"]
    assert [e["message"] for e in seams] == [SEAM]
    assert after[0]["type"] == "status"  # the seam comes before anything continued
    assert events[-1]["type"] == "done"
    assert sum(e["type"] in ("done", "error", "cancelled") for e in events) == 1
    assert _text(before)
    assert _text(after)
    assert _text(events) == compose_answer(QUESTION)  # the sim's, whole


def test_exactly_one_replica_takes_a_stream_over(
    tmp_path: Path, redis_url: str, survivors: tuple[RealServer, RealServer]
) -> None:
    stream_id, before = _start_then_die(tmp_path, _config(redis_url))
    results: dict[str, list[dict[str, Any]]] = {}

    def resume(server: RealServer) -> None:
        results[server.url] = _resume(server, stream_id, before[-1]["_id"])

    threads = [threading.Thread(target=resume, args=(server,)) for server in survivors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    b, c = (results[server.url] for server in survivors)
    assert b == c  # both replicas' readers see the same single continuation
    assert [e["type"] for e in b].count("status") == 1
    assert b[-1]["type"] == "done"
    takers = [s for s in survivors if f"stream {stream_id}: its producer was lost" in s.log()]
    assert len(takers) == 1


def test_a_taken_over_stream_stops_when_its_last_live_reader_leaves(
    tmp_path: Path, redis_url: str, survivors: tuple[RealServer, RealServer]
) -> None:
    """The dead replica's reader was counted in; were it still counted, the stream would run
    on, billing, with nobody reading."""
    b, _ = survivors
    body = {**BODY, "model": "sim/default+endless", "on_disconnect": "cancel"}
    stream_id, before = _start_then_die(tmp_path, _config(redis_url), body)
    url = f"{b.url}/api/streams/{stream_id}"
    seen = b""
    with httpx.stream("GET", url, headers={"last-event-id": before[-1]["_id"]}) as response:
        for chunk in response.iter_raw():
            seen += chunk
            if seen.count(b'"type":"token"') >= 3:
                break  # the only live reader leaves
    assert b'"type":"status"' in seen

    def ended() -> bool:  # read for a second at most: a stream still running never ends
        started, body = time.monotonic(), b""
        with httpx.stream("GET", url, headers={"last-event-id": before[-1]["_id"]}) as response:
            for chunk in response.iter_raw():
                body += chunk
                if b'"type":"cancelled"' in body or time.monotonic() - started > 1.0:
                    break
        return b'"type":"cancelled"' in body

    b.wait_for("the taken-over stream cancelled", ended, 10)


def test_a_taken_over_stream_that_nobody_reads_is_not_left_running(
    tmp_path: Path, redis_url: str, survivors: tuple[RealServer, RealServer]
) -> None:
    """The resume that noticed the lapsed lease is refused (a cursor past the end) after its
    replica took the stream over: nobody ever reads it, and its on_disconnect applies."""
    b, _ = survivors
    body = {**BODY, "model": "sim/default+endless", "on_disconnect": "cancel"}
    stream_id, _ = _start_then_die(tmp_path, _config(redis_url), body)
    url = f"{b.url}/api/streams/{stream_id}"
    time.sleep(1.2)  # the dead replica's lease lapses
    refused = httpx.get(url, headers={"last-event-id": f"{stream_id}:99999"}, timeout=10)
    assert refused.status_code == 400

    # Watched without reading it: a reader leaving would apply the policy itself.
    assert b.health()["active_streams"] == 1  # taken over, on the replica that noticed
    b.wait_for("the unread stream stopped", lambda: b.health()["active_streams"] == 0, 15)


def test_without_the_setting_a_dead_replicas_stream_ends_with_producer_lost(
    tmp_path: Path, redis_url: str
) -> None:
    config = _config(redis_url, on_producer_lost="error")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with real_server(tmp_path / "b", config) as b:
        stream_id, before = _start_then_die(tmp_path / "a", config)
        after = _resume(b, stream_id, before[-1]["_id"])
    assert after == [{"type": "error", "status": 502, "error_type": "producer_lost"}]


def test_a_stream_with_tool_calls_is_not_continued_but_ends_honestly(
    tmp_path: Path, redis_url: str, survivors: tuple[RealServer, RealServer]
) -> None:
    b, _ = survivors
    config = _config(redis_url)
    with real_server(tmp_path, config) as doomed:
        body: dict[str, object] = {
            "message": "What is the weather in Paris?",
            "model": "sim/default+tools",
            "on_disconnect": "detach",
            "tools": [{"name": "get_weather", "parameters": {"type": "object"}}],
        }
        creator = open_request(doomed.url, "/api/chat/stream", body)
        head = read_until(creator, b'"phase":"delta"')
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait()
        creator.close()
    stream_id, before = whole_events_of(head)
    after = _resume(b, stream_id, before[-1]["_id"])
    assert after == [{"type": "error", "status": 502, "error_type": "producer_lost"}]
