"""`tokenrelay.client` against a real server, through a proxy that can drop the connection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import sse_events
from tests.realserver import RealServer, real_server
from tests.tcpproxy import CuttableProxy, cuttable_proxy
from tokenrelay.client import (
    AsyncClient,
    Backoff,
    Client,
    ConnectionLost,
    Done,
    Start,
    StreamFailed,
    Token,
    ToolCall,
)
from tokenrelay.client.protocol import Resumption

pytestmark = pytest.mark.server

QUICK = Backoff(base=0.05, cap=0.2)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    config = "[sim]\nttft = 0.05\ntokens_per_second = 200.0\n"
    with real_server(tmp_path_factory.mktemp("client"), config) as running:
        yield running


@pytest.fixture
def proxy(server: RealServer) -> Iterator[CuttableProxy]:
    with cuttable_proxy(server.url) as running:
        yield running


def _final_events(server: RealServer, stream_id: str) -> list[dict[str, Any]]:
    return sse_events(httpx.get(f"{server.url}/api/streams/{stream_id}", timeout=10).content)


def test_stream_yields_typed_events_and_the_same_text_as_complete(server: RealServer) -> None:
    with Client(server.url) as client:
        events = list(client.stream("Explain TCP", model="sim/fast", max_tokens=40))
        answer = client.complete("Explain TCP", model="sim/fast", max_tokens=40)
    assert isinstance(events[0], Start)
    assert isinstance(events[-1], Done)
    assert events[-1].token_count == 40
    text = "".join(e.text for e in events if isinstance(e, Token))
    assert text == answer.content
    assert answer.finish_reason == "length"


def test_a_dropped_connection_resumes_with_nothing_lost_or_doubled(
    server: RealServer, proxy: CuttableProxy
) -> None:
    with Client(server.url) as client:
        expected = client.complete("Explain resumes", model="sim/default", max_tokens=60).content
    with Client(proxy.url, backoff=QUICK) as client:
        stream = client.stream("Explain resumes", model="sim/default", max_tokens=60)
        events = []
        for event in stream:
            events.append(event)
            if sum(isinstance(e, Token) for e in events) == 10 and not proxy.cuts:
                proxy.cut()
    seqs = [int(e.id.rpartition(":")[2]) for e in events]
    assert seqs == list(range(1, len(events) + 1))  # every event once, in order
    assert "".join(e.text for e in events if isinstance(e, Token)) == expected
    assert isinstance(events[-1], Done)
    assert stream.resumes >= 1


def test_a_drop_inside_a_tool_call_resumes_into_the_same_call(
    server: RealServer, proxy: CuttableProxy
) -> None:
    tools = [
        {"name": name, "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
        for name in ("get_weather", "get_time")
    ]
    question = "Weather and time in Oslo?"
    with Client(server.url) as client:
        whole = client.complete(question, model="sim/think+tools", tools=tools)
    with Client(proxy.url, backoff=QUICK) as client:
        stream = client.stream(question, model="sim/think+tools", tools=tools)
        seqs = []
        for event in stream:
            seqs.append(int(event.id.rpartition(":")[2]))
            if isinstance(event, ToolCall) and event.phase == "delta" and not proxy.cuts:
                proxy.cut()
    assert stream.resumes >= 1
    assert seqs == list(range(1, len(seqs) + 1))
    assert stream.answer.finish_reason == "tool_calls"
    assert stream.answer.message() == whole.message()  # nothing lost or doubled in a call
    for call in stream.answer.tool_calls:
        assert orjson.loads(call.arguments_text) == call.arguments


@pytest.mark.anyio
async def test_the_async_client_resumes_too(server: RealServer, proxy: CuttableProxy) -> None:
    async with AsyncClient(server.url) as client:
        expected = (await client.complete("Async drop", model="sim/default", max_tokens=50)).content
    async with AsyncClient(proxy.url, backoff=QUICK) as client:
        stream = client.stream("Async drop", model="sim/default", max_tokens=50)
        text, tokens = "", 0
        async for event in stream:
            if isinstance(event, Token):
                text += event.text
                tokens += 1
                if tokens == 5:
                    proxy.cut()
    assert text == expected
    assert stream.resumes >= 1


def test_leaving_the_loop_cancels_on_the_server(server: RealServer) -> None:
    with Client(server.url) as client:
        stream = client.stream("Keep going", model="sim/default+endless")
        for event in stream:
            if isinstance(event, Token):
                break
    ending = _final_events(server, stream.stream_id)[-1]
    assert ending["type"] == "cancelled"


def test_cancel_returns_whether_there_was_something_to_cancel(server: RealServer) -> None:
    with Client(server.url) as client:
        stream = client.stream("Stop me", model="sim/default+endless")
        iterator = iter(stream)
        next(iterator)  # start: the stream id is known
        assert stream.cancel() is True
        assert stream.cancel() is False


def test_refusals_raise_stream_failed_with_the_servers_error(server: RealServer) -> None:
    with Client(server.url) as client, pytest.raises(StreamFailed) as failed:
        list(client.stream("x", model="nope/nothing"))
    assert failed.value.status == 404
    assert failed.value.error["type"] == "unknown_model"
    assert failed.value.error["request_id"].startswith("req_")


def test_structured_answers_come_back_parsed(server: RealServer) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}
    with Client(server.url) as client:
        answer = client.complete("A number", model="sim/fast", response_format=fmt)
    assert isinstance(answer.parsed["n"], int)


def test_a_drop_before_the_stream_started_is_never_resent() -> None:
    progress = Resumption({"message": "x"}, QUICK)
    with pytest.raises(ConnectionLost, match="not resent"):
        progress.dropped(OSError("refused"))


def test_resuming_gives_up_after_max_resumes_in_a_row() -> None:
    progress = Resumption({"message": "x"}, Backoff(max_resumes=2, base=0.0))
    progress.stream_id = "str_x"
    progress.dropped(None)
    progress.dropped(None)
    with pytest.raises(ConnectionLost, match="gave up"):
        progress.dropped(None)


def test_unreachable_server_raises_a_transport_error(tmp_path: Path) -> None:
    from tests.realserver import free_port

    with Client(f"http://127.0.0.1:{free_port()}") as client, pytest.raises(ConnectionLost):
        list(client.stream("x"))
