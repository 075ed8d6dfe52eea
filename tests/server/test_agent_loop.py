"""An agent loop through every endpoint: ask, the model calls tools, the results go back, the
model answers from them; with thinking on where the dialect has it. Then resume and recovery
of streams that hold calls.

A real tokenrelay whose `openai` and `anthropic` upstreams are the mock upstream; the native
API is driven with httpx, `/v1` with the official SDKs. The mock records each body it was
sent (`?bodies=1`), so the tests see what reached the upstream: signatures byte for byte.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import jsonschema
import openai
import pytest

from tests.conftest import sse_events
from tests.realserver import MockUpstream, RealServer, model_of, real_server, upstreams_config
from tokenrelay.providers import sim_agent
from tokenrelay.providers.content import Message
from tokenrelay.sse import SSEDecoder

pytestmark = pytest.mark.server

PROVIDERS = ["sim", "openai", "anthropic"]
QUESTION = "What is the weather in Paris today?"
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius"]}},
    "required": ["city", "unit"],
}
SEARCH_SCHEMA = {
    "type": "object",
    "properties": {"query": {"type": "string"}},
    "required": ["query"],
}
SCHEMAS = {"get_weather": WEATHER_SCHEMA, "search_docs": SEARCH_SCHEMA}
# What the tools "return": the first works, the second fails.
RESULTS = {"get_weather": "18 degrees and sunny", "search_docs": "the search backend timed out"}
REASONING = sim_agent.compose_reasoning(QUESTION)
SIGNATURE = sim_agent.signature(REASONING)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream) -> Iterator[RealServer]:
    # One retry, quick, so that `on_upstream_error: "continue"` has a budget to continue with.
    streams = "max_retries = 1\nretry_base_delay = 0.01"
    config = upstreams_config(mock, streams)
    env = {"TEST_UPSTREAM_KEY": "sk-test-upstream"}
    with real_server(tmp_path_factory.mktemp("agent"), config, env) as running:
        yield running


@pytest.fixture
def http(server: RealServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:12]


def thinking_for(provider: str, dialect: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    """How to ask `provider` to think from `dialect`: its own parameter where the upstream
    honours it (the other is refused), else a model that thinks anyway. (An OpenAI client can
    ask Anthropic to think, but cannot send the signature back: see the xfail below.)"""
    if dialect == "openai":
        return ({}, ("think",)) if provider == "anthropic" else ({"reasoning_effort": "low"}, ())
    if dialect == "anthropic":
        budget = {"type": "enabled", "budget_tokens": 1024}
        return ({}, ("think",)) if provider == "openai" else ({"thinking": budget}, ())
    if provider == "openai":
        return {"reasoning_effort": "low"}, ()
    return {"thinking_budget": 1024}, ()


def final_answer(provider: str, *, flagged: bool = True) -> str:
    """What the sim says once the results are back, the second `flagged` as failed (the
    OpenAI dialect has no flag to send). An OpenAI-compatible upstream has no form for the
    flag either: the result's text says "Error: " there instead."""
    weather = Message("tool", RESULTS["get_weather"], tool_call_id="a")
    docs = RESULTS["search_docs"]
    if flagged and provider == "openai":
        failed = Message("tool", f"Error: {docs}", tool_call_id="b")
    else:
        failed = Message("tool", docs, tool_call_id="b", is_error=flagged)
    return sim_agent.after_results(QUESTION, [weather, failed])


def assistant_turns(mock: MockUpstream, tag: str) -> list[dict[str, Any]]:
    """The assistant turns of the last request the mock was sent for this test."""
    bodies = mock.sent(tag)
    assert len(bodies) == 2, bodies  # the question, then the results
    return [m for m in bodies[-1]["messages"] if m["role"] == "assistant"]


def signature_returned(mock: MockUpstream, tag: str) -> str:
    """The signature of the thinking block the Anthropic upstream was sent back."""
    (turn,) = assistant_turns(mock, tag)
    (block,) = [b for b in turn["content"] if b["type"] == "thinking"]
    assert block["thinking"] == REASONING
    signature: str = block["signature"]
    return signature


def signature_sent(mock: MockUpstream, tag: str) -> str:
    """The signature the mock gives for the first request, asked of it directly."""
    first = {**mock.sent(tag)[0], "stream": False}
    first["model"] = first["model"].replace(f"+tag-{tag}", "")  # not in the test's record
    answer = httpx.post(f"{mock.url}/v1/messages", json=first, timeout=10).json()
    (block,) = [b for b in answer["content"] if b["type"] == "thinking"]
    signature: str = block["signature"]
    return signature


# ---------------------------------------------------------------- the native API


def native_tools() -> list[dict[str, Any]]:
    return [{"name": name, "parameters": schema} for name, schema in SCHEMAS.items()]


def native_turn(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The assistant turn a stream's events make, as the native API takes it back."""
    text = "".join(e["content"] for e in events if e["type"] == "token")
    reasoning = [e for e in events if e["type"] == "reasoning"]
    ends = [e for e in events if e["type"] == "tool_call" and e["phase"] == "end"]
    turn: dict[str, Any] = {
        "role": "assistant",
        "content": text,
        "tool_calls": [
            {"id": e["id"], "name": e["name"], "arguments": e["arguments"]} for e in ends
        ],
    }
    if reasoning:
        signature = "".join(e.get("signature", "") for e in reasoning)
        content = "".join(e["content"] for e in reasoning)
        turn["reasoning"] = [{"content": content, "signature": signature}]
    return turn


@pytest.mark.parametrize("provider", PROVIDERS)
def test_native_non_streaming_answer_holds_reasoning_and_calls(
    http: httpx.Client, provider: str
) -> None:
    thinking, parts = thinking_for(provider, "native")
    request = {
        "model": model_of(provider, "tools", *parts),
        "messages": [{"role": "user", "content": QUESTION}],
        "tools": native_tools(),
        **thinking,
    }
    answer = http.post("/api/chat", json=request).json()
    assert answer["finish_reason"] == "tool_calls"
    assert answer["content"] == "Let me check that with `get_weather` and `search_docs`."
    assert [call["name"] for call in answer["tool_calls"]] == ["get_weather", "search_docs"]
    for call in answer["tool_calls"]:
        jsonschema.validate(call["arguments"], SCHEMAS[call["name"]])
    (block,) = answer["reasoning"]
    assert block["content"] == REASONING
    assert block["signature"] == ("" if provider == "openai" else SIGNATURE)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_native_agent_loop(http: httpx.Client, mock: MockUpstream, provider: str, tag: str) -> None:
    thinking, parts = thinking_for(provider, "native")
    request = {
        "model": model_of(provider, "tools", *parts, tag=tag),
        "messages": [{"role": "user", "content": QUESTION}],
        "tools": native_tools(),
        **thinking,
    }
    first = http.post("/api/chat/stream", json=request)
    assert first.status_code == 200
    events = sse_events(first.content)
    assert events[-1]["type"] == "done"
    assert events[-1]["finish_reason"] == "tool_calls"
    turn = native_turn(events)
    assert turn["content"] == "Let me check that with `get_weather` and `search_docs`."
    assert [call["name"] for call in turn["tool_calls"]] == ["get_weather", "search_docs"]
    for call in turn["tool_calls"]:
        jsonschema.validate(call["arguments"], SCHEMAS[call["name"]])
    # Every call's start, pieces and end, in that order; the pieces join to its arguments.
    for index, call in enumerate(turn["tool_calls"]):
        mine = [e for e in events if e["type"] == "tool_call" and e["index"] == index]
        assert [e["phase"] for e in mine[:1] + mine[-1:]] == ["start", "end"]
        assert {e["phase"] for e in mine[1:-1]} == {"delta"}
        assert json.loads("".join(e["arguments"] for e in mine[1:-1])) == call["arguments"]
    assert turn["reasoning"][0]["content"] == REASONING
    if provider != "openai":  # OpenAI-compatible upstreams give no signature
        assert turn["reasoning"][0]["signature"] == SIGNATURE
    results = [
        {"role": "tool", "tool_call_id": call["id"], "content": RESULTS[call["name"]]}
        for call in turn["tool_calls"]
    ]
    results[1]["is_error"] = True
    request["messages"] = [*request["messages"], turn, *results]
    second = sse_events(http.post("/api/chat/stream", json=request).content)
    assert second[-1]["type"] == "done"
    assert second[-1]["finish_reason"] == "stop"
    assert "".join(e["content"] for e in second if e["type"] == "token") == final_answer(provider)
    if provider == "anthropic":
        assert signature_returned(mock, tag) == signature_sent(mock, tag) == SIGNATURE
    if provider == "openai":  # the calls went back as the upstream gave them
        (sent_turn,) = assistant_turns(mock, tag)
        ids = [call["id"] for call in sent_turn["tool_calls"]]
        assert ids == [call["id"] for call in turn["tool_calls"]]


# ---------------------------------------------------------------- /v1/chat/completions


OPENAI_TOOLS: Any = [
    {"type": "function", "function": {"name": name, "parameters": schema}}
    for name, schema in SCHEMAS.items()
]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_openai_sdk_agent_loop(
    server: RealServer, mock: MockUpstream, provider: str, tag: str
) -> None:
    thinking, parts = thinking_for(provider, "openai")
    model = model_of(provider, "tools", *parts, tag=tag)
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0) as client:
        with client.chat.completions.stream(
            model=model, messages=messages, tools=OPENAI_TOOLS, **thinking
        ) as stream:
            reasoning = "".join(
                getattr(e.chunk.choices[0].delta, "reasoning_content", None) or ""
                for e in stream
                if e.type == "chunk" and e.chunk.choices
            )
            first = stream.get_final_completion()
        assert reasoning == REASONING
        message = first.choices[0].message
        calls = message.tool_calls or []
        assert [call.function.name for call in calls] == ["get_weather", "search_docs"]
        # As users write it: the SDK's message goes back as it came.
        messages.append(message)
        for call in calls:
            result = RESULTS[call.function.name]
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
        second = client.chat.completions.create(
            model=model, messages=messages, tools=OPENAI_TOOLS, **thinking
        )
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == final_answer(provider, flagged=False)
    if provider != "sim":
        (sent_turn,) = assistant_turns(mock, tag)
        returned = _calls_returned(sent_turn, provider)
        assert returned == [
            (c.id, c.function.name, json.loads(c.function.arguments)) for c in calls
        ]


def _calls_returned(turn: dict[str, Any], provider: str) -> list[tuple[str, str, Any]]:
    """The calls an assistant turn sent to the upstream holds, as (id, name, arguments)."""
    if provider == "openai":
        return [
            (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
            for c in turn["tool_calls"]
        ]
    return [(b["id"], b["name"], b["input"]) for b in turn["content"] if b["type"] == "tool_use"]


# ---------------------------------------------------------------- /v1/messages


ANTHROPIC_TOOLS: Any = [{"name": name, "input_schema": schema} for name, schema in SCHEMAS.items()]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_anthropic_sdk_agent_loop(
    server: RealServer, mock: MockUpstream, provider: str, tag: str
) -> None:
    thinking, parts = thinking_for(provider, "anthropic")
    model = model_of(provider, "tools", *parts, tag=tag)
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    with anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0) as client:
        with client.messages.stream(
            model=model, max_tokens=2048, messages=messages, tools=ANTHROPIC_TOOLS, **thinking
        ) as stream:
            first = stream.get_final_message()
        assert first.stop_reason == "tool_use"
        assert [b.type for b in first.content] == ["thinking", "text", "tool_use", "tool_use"]
        calls = [b for b in first.content if b.type == "tool_use"]
        # As users write it: the SDK's content blocks go back as they came, thinking included.
        messages.append({"role": "assistant", "content": first.content})
        # One result as text, the failed one as text blocks.
        worked, failed = calls
        text_blocks = [{"type": "text", "text": RESULTS[failed.name]}]
        results: list[dict[str, Any]] = [
            {"type": "tool_result", "tool_use_id": worked.id, "content": RESULTS[worked.name]},
            {"type": "tool_result", "tool_use_id": failed.id, "content": text_blocks},
        ]
        results[1]["is_error"] = True
        messages.append({"role": "user", "content": results})
        with client.messages.stream(
            model=model, max_tokens=2048, messages=messages, tools=ANTHROPIC_TOOLS, **thinking
        ) as stream:
            second = stream.get_final_message()
    assert second.stop_reason == "end_turn"
    texts = [b.text for b in second.content if b.type == "text"]
    assert texts == [final_answer(provider)]
    if provider == "anthropic":
        assert signature_returned(mock, tag) == signature_sent(mock, tag)
        assert first.content[0].type == "thinking"
        assert first.content[0].signature == signature_sent(mock, tag)
    if provider != "sim":
        (sent_turn,) = assistant_turns(mock, tag)
        assert _calls_returned(sent_turn, provider) == [(c.id, c.name, c.input) for c in calls]


@pytest.mark.parametrize("tamper", ["signature", "dropped"])
def test_the_upstream_refuses_thinking_that_did_not_come_back_whole(
    server: RealServer, tamper: str
) -> None:
    """The control for the loops above: the mock, like Anthropic, refuses a thinking block
    whose signature changed, and a tool-calling turn sent back without its thinking; so the
    loops passing means the signature came back byte for byte."""
    budget: Any = {"type": "enabled", "budget_tokens": 1024}
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    model = model_of("anthropic", "tools")
    with anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0) as client:
        first = client.messages.create(
            model=model, max_tokens=2048, messages=messages, tools=ANTHROPIC_TOOLS, thinking=budget
        )
        blocks = [block.model_dump() for block in first.content]
        if tamper == "signature":
            blocks[0]["signature"] = blocks[0]["signature"][:-1] + "0"
        else:
            blocks = blocks[1:]
        results = [
            {"type": "tool_result", "tool_use_id": b["id"], "content": "ok"}
            for b in blocks
            if b["type"] == "tool_use"
        ]
        messages += [
            {"role": "assistant", "content": blocks},
            {"role": "user", "content": results},
        ]
        with pytest.raises(anthropic.APIStatusError) as caught:
            client.messages.create(
                model=model,
                max_tokens=2048,
                messages=messages,
                tools=ANTHROPIC_TOOLS,
                thinking=budget,
            )
    assert caught.value.status_code == 400  # the upstream refused the request: upstream_rejected


@pytest.mark.parametrize("streaming", [False, True])
def test_openai_sdk_agent_loop_with_anthropic_thinking(
    server: RealServer, tag: str, streaming: bool
) -> None:
    # The signature travels in `thinking_blocks` (ours, as LiteLLM names it): the SDK keeps
    # it, streamed or not, and sends it back with the message.
    thinking: Any = {"extra_body": {"thinking": {"type": "enabled", "budget_tokens": 1024}}}
    model = model_of("anthropic", "tools", tag=tag)
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0) as client:
        if streaming:
            with client.chat.completions.stream(
                model=model, messages=messages, tools=OPENAI_TOOLS, **thinking
            ) as stream:
                first = stream.get_final_completion()
        else:
            first = client.chat.completions.create(
                model=model, messages=messages, tools=OPENAI_TOOLS, **thinking
            )
        message = first.choices[0].message
        [block] = (message.model_extra or {})["thinking_blocks"]
        assert block["thinking"] == REASONING
        assert block["signature"]
        assert getattr(message, "reasoning_content", None) == REASONING
        messages.append(message)
        for call in message.tool_calls or []:
            result = RESULTS[call.function.name]
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
        second = client.chat.completions.create(
            model=model, messages=messages, tools=OPENAI_TOOLS, **thinking
        )
    assert second.choices[0].message.content == final_answer("anthropic", flagged=False)


# ---------------------------------------------------------------- resume and recovery


def raw_events(body: bytes) -> list[tuple[str, str]]:
    """A stream's events as sent: (id, data) with the data's exact text."""
    decoder = SSEDecoder()
    return [(e.id or "", e.data) for e in decoder.feed(body) + decoder.close()]


def native_request(provider: str, *parts: str, **fields: Any) -> dict[str, Any]:
    return {
        "model": model_of(provider, "tools", *parts),
        "messages": [{"role": "user", "content": QUESTION}],
        "tools": native_tools(),
        **fields,
    }


@pytest.mark.parametrize("provider", PROVIDERS)
def test_resume_in_the_middle_of_a_call_replays_it_exactly(
    http: httpx.Client, provider: str
) -> None:
    sent = raw_events(http.post("/api/chat/stream", json=native_request(provider)).content)
    events = [json.loads(data) for _, data in sent]
    deltas = [
        i
        for i, e in enumerate(events)
        if e["type"] == "tool_call" and e["phase"] == "delta" and e["index"] == 0
    ]
    assert len(deltas) >= 3
    cut = deltas[1]  # the call has begun and has more to come
    stream_id = events[0]["stream_id"]
    replay = http.get(f"/api/streams/{stream_id}", headers={"last-event-id": sent[cut][0]})
    assert replay.status_code == 200
    assert raw_events(replay.content) == sent[cut + 1 :]  # the same ids and bytes
    rest = [json.loads(data) for _, data in sent[cut + 1 :]]
    assert {"tool_call"} <= {e["type"] for e in rest}
    assert rest[-1]["type"] == "done"


def _tokens_before_the_calls(http: httpx.Client, provider: str) -> int:
    events = sse_events(http.post("/api/chat/stream", json=native_request(provider)).content)
    first_call = next(i for i, e in enumerate(events) if e["type"] == "tool_call")
    return sum(1 for e in events[:first_call] if e["type"] == "token")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_reset_inside_a_call_is_not_continued(http: httpx.Client, provider: str) -> None:
    """A continuation carries on text: the upstream cannot be asked to carry on a call's
    arguments, so a reset inside one ends the stream with an honest error."""
    inside = _tokens_before_the_calls(http, provider) + 2  # two pieces into the first call
    request = native_request(provider, f"reset-after-{inside}", on_upstream_error="continue")
    events = sse_events(http.post("/api/chat/stream", json=request).content)
    calls = [e for e in events if e["type"] == "tool_call"]
    assert [e["phase"] for e in calls] == ["start", "delta", "delta"]
    assert events[-1]["type"] == "error"
    assert events[-1]["error_type"] == "network_error"
    assert not [e for e in events if e["type"] == "status"]  # no continuation was tried
    assert sum(1 for e in events if e["type"] == "error") == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_reset_before_the_calls_is_continued(http: httpx.Client, provider: str) -> None:
    """The control: a reset in the text before any call is continued, and the answer is the
    one the model would have given, said once, with its calls whole."""
    clean = sse_events(http.post("/api/chat/stream", json=native_request(provider)).content)
    request = native_request(provider, "reset-after-3", on_upstream_error="continue")
    events = sse_events(http.post("/api/chat/stream", json=request).content)
    assert events[-1]["type"] == "done"
    assert events[-1]["finish_reason"] == "tool_calls"
    assert [e["type"] for e in events if e["type"] == "status"] == ["status"]
    text = "".join(e["content"] for e in events if e["type"] == "token")
    assert text == "".join(e["content"] for e in clean if e["type"] == "token")
    assert _call_ends(events) == _call_ends(clean)


def _call_ends(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in e.items() if k != "_id"}
        for e in events
        if e["type"] == "tool_call" and e["phase"] == "end"
    ]
