"""Reasoning, tool calls and usage through `AsyncClient`, in process, from the sim and from
the mock upstream speaking Anthropic's API (which counts the prompt before the answer)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import quick_settings
from tests.realserver import MockUpstream
from tokenrelay.client import (
    AsyncClient,
    Done,
    Reasoning,
    Start,
    StreamEvent,
    Token,
    ToolCall,
    Usage,
)
from tokenrelay.server.app import create_app

TOOLS = [
    {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
    {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
]
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture
async def client(mock: MockUpstream) -> AsyncIterator[AsyncClient]:
    settings = quick_settings().with_changes(
        upstreams={"anthropic": {"kind": "anthropic", "base_url": mock.url}}
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),  # closes the upstream's connection pool afterwards
        AsyncClient("http://tokenrelay.test", transport=transport) as client,
    ):
        yield client


async def _events(client: AsyncClient, model: str, **fields: Any) -> list[StreamEvent]:
    return [event async for event in client.stream(messages=QUESTION, model=model, **fields)]


@pytest.mark.anyio
@pytest.mark.parametrize("model", ["sim/fast+think+tools", "anthropic/fast+think+tools"])
async def test_reasoning_and_calls_arrive_typed_and_fold_to_the_whole_answer(
    client: AsyncClient, model: str
) -> None:
    stream = client.stream(messages=QUESTION, model=model, tools=TOOLS)
    events = [event async for event in stream]
    whole = await client.complete(messages=QUESTION, model=model, tools=TOOLS)

    reasoning = [e for e in events if isinstance(e, Reasoning)]
    assert "".join(e.content for e in reasoning) == whole.reasoning[0].content
    assert reasoning[-1].signature == whole.reasoning[0].signature != ""
    calls = [e for e in events if isinstance(e, ToolCall)]
    for index, name in enumerate(["get_weather", "get_time"]):  # both at once: parallel calls
        own = [e for e in calls if e.index == index]
        assert [e.phase for e in own] == ["start"] + ["delta"] * (len(own) - 2) + ["end"]
        assert {e.name for e in own} == {name}  # deltas named by the client too
        text = "".join(e.arguments for e in own if e.phase == "delta")
        assert json.loads(text) == own[-1].arguments  # the pieces spell what end parsed
    assert isinstance(events[-1], Done)
    assert events[-1].finish_reason == "tool_calls"

    answer = stream.answer
    assert answer.content == whole.content
    assert answer.reasoning == whole.reasoning
    assert [(c.call_id, c.name, c.arguments) for c in answer.tool_calls] == [
        (c.call_id, c.name, c.arguments) for c in whole.tool_calls
    ]
    assert answer.message() == whole.message()
    assert answer.usage == whole.usage


@pytest.mark.anyio
async def test_the_prompt_count_comes_early_as_a_usage_event(client: AsyncClient) -> None:
    events = await _events(client, "anthropic/fast")
    assert isinstance(events[0], Start)
    assert isinstance(events[1], Usage)  # before any text
    assert events[1].usage["prompt_tokens"] > 0
    assert isinstance(events[2], Token)
    done = events[-1]
    assert isinstance(done, Done)
    assert done.usage is not None
    assert done.usage["prompt_tokens"] == events[1].usage["prompt_tokens"]


@pytest.mark.anyio
async def test_the_answer_sent_back_with_tool_results_is_answered_from_them(
    client: AsyncClient,
) -> None:
    stream = client.stream(messages=QUESTION, model="sim/fast+think+tools", tools=TOOLS)
    async for _ in stream:
        pass
    history: list[dict[str, Any]] = [*QUESTION, stream.answer.message()]
    for call in stream.answer.tool_calls:
        result = f"{call.name}: sunny in {call.arguments['city']}"
        history.append({"role": "tool", "tool_call_id": call.call_id, "content": result})
    followed = client.stream(messages=history, model="sim/fast+think+tools", tools=TOOLS)
    async for _ in followed:
        pass
    assert followed.answer.finish_reason == "stop"
    assert "The tool returned: get_weather: sunny in" in followed.answer.content
    assert "The tool returned: get_time: sunny in" in followed.answer.content
    assert followed.answer.tool_calls == []


@pytest.mark.anyio
async def test_without_include_reasoning_no_reasoning_arrives(client: AsyncClient) -> None:
    events = await _events(client, "sim/fast+think", include_reasoning=False)
    assert not [e for e in events if isinstance(e, Reasoning)]
    assert isinstance(events[-1], Done)
