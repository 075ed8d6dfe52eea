"""The simulated model: deterministic, realistic tokens, variants and scripted faults."""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenrelay.errors import ContentFiltered, NetworkError, RateLimited, UpstreamError
from tokenrelay.providers import sim_agent
from tokenrelay.providers.base import Delta, GenerationRequest
from tokenrelay.providers.content import Message, Tool
from tokenrelay.providers.sim import INSTANT, SimProvider, SimTiming, parse_variant
from tokenrelay.providers.sim_text import compose_answer, tokenize, topic_of

pytestmark = pytest.mark.anyio


def _request(
    model: str = "fast", text: str = "Explain streaming", **kw: object
) -> GenerationRequest:
    return GenerationRequest(model=model, messages=(Message("user", text),), **kw)  # type: ignore[arg-type]


async def _collect(provider: SimProvider, request: GenerationRequest) -> list[Delta]:
    return [d async for d in provider.stream(request)]


async def test_same_prompt_same_tokens() -> None:
    sim = SimProvider()
    first = await _collect(sim, _request())
    assert first == await _collect(sim, _request())
    assert first != await _collect(sim, _request(text="Something else entirely"))


async def test_answer_ends_with_one_finish_and_usage() -> None:
    deltas = await _collect(SimProvider(), _request())
    *tokens, last = deltas
    assert all(d.text and d.finish_reason is None for d in tokens)
    assert last.finish_reason == "stop"
    assert last.usage is not None
    assert last.usage.completion_tokens == len(tokens)
    assert "".join(d.text for d in tokens) == compose_answer("Explain streaming")
    assert len(tokens) > 150  # reads like a real answer, not a stub


async def test_max_tokens_stops_with_length() -> None:
    deltas = await _collect(SimProvider(), _request(max_tokens=7))
    assert len(deltas) == 8
    assert deltas[-1].finish_reason == "length"


async def test_code_is_answered_with_a_code_block() -> None:
    deltas = await _collect(SimProvider(), _request(text="Write a python function to parse"))
    text = "".join(d.text for d in deltas)
    assert "```python\n" in text
    assert "\ndef " in text
    assert text.count("```") == 2
    assert "\n1. " in text  # a markdown list


async def test_json_response_format_gives_json() -> None:
    deltas = await _collect(SimProvider(), _request(response_format={"type": "json_object"}))
    assert isinstance(json.loads("".join(d.text for d in deltas)), dict)


async def test_json_schema_shapes_the_answer() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}
    deltas = await _collect(SimProvider(), _request(response_format=fmt))
    value = json.loads("".join(d.text for d in deltas))
    assert set(value) == {"name", "age", "tags"}
    assert isinstance(value["age"], int)


async def test_endless_runs_to_max_tokens() -> None:
    deltas = await _collect(SimProvider(), _request("fast+endless", max_tokens=3000))
    assert len(deltas) == 3001
    assert deltas[-1].finish_reason == "length"


@pytest.mark.parametrize(
    ("model", "error", "tokens_before"),
    [
        ("fast+rate-limit", RateLimited, 0),
        ("fast+error-after-5", UpstreamError, 5),
        ("fast+content-filter-after-3", ContentFiltered, 3),
        ("fast+reset-after-4", NetworkError, 4),
    ],
)
async def test_scripted_faults(model: str, error: type[Exception], tokens_before: int) -> None:
    seen: list[Delta] = []

    async def consume() -> None:
        async for delta in SimProvider().stream(_request(model)):
            seen.append(delta)

    with pytest.raises(error):
        await consume()
    assert len(seen) == tokens_before


async def test_rate_limit_carries_retry_after() -> None:
    with pytest.raises(RateLimited) as caught:
        await _collect(SimProvider(), _request("fast+rate-limit"))
    assert caught.value.retry_after == 1.0


async def test_default_timing_paces_tokens() -> None:
    """Lower bounds only: sleeping can be late on a busy machine, never early."""
    sim = SimProvider(SimTiming(ttft=0.05, tokens_per_second=100.0, jitter=0.2))
    started = time.monotonic()
    stamps = [time.monotonic() async for _ in sim.stream(_request("default", max_tokens=10))]
    assert stamps[0] - started >= 0.05 * 0.8
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) >= 0.01 * 0.8 - 0.002


@pytest.mark.parametrize(
    "name",
    [
        "default",
        "fast",
        "slow-start",
        "endless",
        "fast+endless",
        "rate-limit",
        "error-after-0",
        "fast+stall-after-20",
        "content-filter-after-1",
        "reset-after-9",
    ],
)
def test_variant_names_accepted(name: str) -> None:
    assert parse_variant(name, INSTANT) is not None


@pytest.mark.parametrize(
    "name",
    [
        "",
        "gpt-4o",
        "fast+fast",
        "fast+default",
        "error-after-x",
        "rate-limit+error-after-2",
        "error-after-",
        "fast+",
    ],
)
def test_variant_names_rejected(name: str) -> None:
    assert parse_variant(name, INSTANT) is None


def test_listed_models_are_all_supported() -> None:
    sim = SimProvider()
    assert all(sim.supports(m) for m in sim.models())


@given(st.text(), st.text(max_size=20))
def test_tokens_join_back_to_the_text(text: str, seed: str) -> None:
    assert "".join(tokenize(text, seed)) == text


def test_tokens_are_sub_word() -> None:
    tokens = tokenize(compose_answer("Explain distributed consensus algorithms"))
    assert any(t.isalpha() and not t.startswith(" ") and len(t) <= 3 for t in tokens)
    assert max(len(t.strip()) for t in tokens if t.strip().isalpha()) <= 6


def test_topic_keeps_acronyms() -> None:
    assert topic_of("Explain TCP handshakes please") == "TCP handshakes"
    assert topic_of("What is Gradient Descent?") == "gradient descent"
    assert topic_of("hi") == "hi"
    assert topic_of("?") == "this topic"


_TOOLS = (Tool("get_weather", parameters={"type": "object", "properties": {"city": {}}}),)


async def test_a_fault_can_strike_inside_a_call() -> None:
    """Regression: faults counted only the answer's text, so no fault struck during calls."""
    clean = await _collect(SimProvider(), _request("fast+tools", tools=_TOOLS))
    said = sum(1 for d in clean if d.text)
    deltas: list[Delta] = []

    async def read() -> None:
        request = _request(f"fast+tools+reset-after-{said + 2}", tools=_TOOLS)
        async for delta in SimProvider().stream(request):
            deltas.append(delta)  # one by one: what came before the fault is the point

    with pytest.raises(NetworkError):
        await read()
    pieces = [d.tool for d in deltas if d.tool is not None]
    assert [p.name for p in pieces] == ["get_weather", "", ""]  # the start, then 2 pieces
    assert all(p.arguments for p in pieces[1:])


async def test_a_continuation_before_the_calls_does_not_repeat_the_sentence() -> None:
    """Regression: the sentence before the calls was said again in full after its prefill."""
    clean = await _collect(SimProvider(), _request("fast+tools", tools=_TOOLS))
    sentence = "".join(d.text for d in clean)
    prefill = sentence[:12]
    request = _request("fast+tools", tools=_TOOLS)
    continued = replace(request, messages=(*request.messages, Message("assistant", prefill)))
    deltas = await _collect(SimProvider(), continued)
    assert prefill + "".join(d.text for d in deltas) == sentence
    calls = [(d.tool.id, d.tool.name, d.tool.arguments) for d in deltas if d.tool]
    expected = [(d.tool.id, d.tool.name, d.tool.arguments) for d in clean if d.tool]
    assert [c[:2] for c in calls if c[1]] == [c[:2] for c in expected if c[1]]
    assert "".join(c[2] for c in calls) == "".join(c[2] for c in expected)


@pytest.mark.parametrize("tools", [(), _TOOLS])
async def test_reasoning_tokens_are_counted_apart(tools: tuple[Tool, ...]) -> None:
    deltas = await _collect(SimProvider(), _request("fast+think+tools", tools=tools))
    reasoned = sum(1 for d in deltas if d.reasoning)
    usage = deltas[-1].usage
    assert usage is not None
    assert usage.reasoning_tokens == reasoned > 0
    assert usage.completion_tokens > reasoned
    plain = (await _collect(SimProvider(), _request("fast", tools=tools)))[-1].usage
    assert plain is not None
    assert plain.reasoning_tokens is None  # nothing was said of reasoning: no figure


_CITY = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}


@pytest.mark.parametrize(
    ("question", "parallel", "expected"),
    [
        ("What is the weather in Paris and New York?", None, ["Paris", "New York"]),
        ("What is the weather in Paris and New York?", False, ["Paris"]),
        ("Paris weather?", None, ["paris weather"]),  # a sentence's first word is no name
    ],
)
def test_the_sim_calls_one_tool_once_for_each_name_in_the_question(
    question: str, parallel: bool | None, expected: list[str]
) -> None:
    tools = (Tool("get_weather", parameters=_CITY),)
    calls = sim_agent.plan_calls(tools, None, parallel, question)
    arguments = [json.loads(call.arguments) for call in calls]
    assert [a["city"] for a in arguments] == expected
    assert all(isinstance(a["days"], int) for a in arguments)
    assert len({call.id for call in calls}) == len(calls)
    assert sim_agent.before_calls(calls) == "Let me check that with `get_weather`."
