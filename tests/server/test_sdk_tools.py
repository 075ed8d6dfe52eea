"""Tools, reasoning, images and every parameter, through the official SDKs, end to end.

A real tokenrelay whose `openai` and `anthropic` upstreams are the mock upstream, driven by the
unmodified `openai` and `anthropic` SDKs: so each dialect is tried against the sim in-process,
against an upstream of its own dialect, and across dialects (an OpenAI client in front of an
Anthropic upstream, and the reverse). What reached the upstream is read from the mock's record
(`?bodies=1`), found by a `+tag-<hex>` part in the model name.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import jsonschema
import openai
import pytest

from tests.realserver import MockUpstream, RealServer, model_of, real_server, upstreams_config
from tokenrelay.providers import sim_agent
from tokenrelay.providers.content import Tool
from tokenrelay.providers.sim_text import compose_answer

pytestmark = pytest.mark.server

PROVIDERS = ["sim", "openai", "anthropic"]
UPSTREAMS = ["openai", "anthropic"]  # the providers behind the mock, whose requests it records
QUESTION = "What is the weather in Paris today?"

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
SEARCH_SCHEMA = {
    "type": "object",
    "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
    "required": ["query", "limit"],
}
SCHEMAS: dict[str, Any] = {"get_weather": WEATHER_SCHEMA, "search_docs": SEARCH_SCHEMA}
OPENAI_TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"The {name.replace('_', ' ')} tool",
            "parameters": schema,
        },
    }
    for name, schema in SCHEMAS.items()
]
ANTHROPIC_TOOLS: Any = [
    {"name": name, "description": f"The {name.replace('_', ' ')} tool", "input_schema": schema}
    for name, schema in SCHEMAS.items()
]
STRICT_TOOLS: Any = [
    {**tool, "function": {**tool["function"], "strict": True}} for tool in OPENAI_TOOLS
]
THINKING: Any = {"type": "enabled", "budget_tokens": 1024}
# A PNG's and a PDF's first bytes, base64: nothing looks inside them.
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 60).decode()
PDF = base64.b64encode(b"%PDF-1.4\n%%EOF\n").decode()
UNROUTABLE = "https://127.0.0.1:9/x.png"  # nothing listens there: a fetch would fail


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream) -> Iterator[RealServer]:
    env = {"TEST_UPSTREAM_KEY": "sk-test-upstream"}
    with real_server(tmp_path_factory.mktemp("sdk-tools"), upstreams_config(mock), env) as running:
        yield running


@pytest.fixture
def tag() -> str:
    """A label for this test's upstream requests, so the mock's record finds them."""
    return uuid.uuid4().hex[:12]


def sent(mock: MockUpstream, tag: str) -> dict[str, Any]:
    """The one request body the mock received for this test."""
    bodies = mock.sent(tag)
    assert len(bodies) == 1, bodies
    return bodies[0]


def user(text: str = QUESTION) -> Any:
    return [{"role": "user", "content": text}]


def follows_schema(name: str, arguments: Any) -> None:
    jsonschema.validate(arguments, SCHEMAS[name])


def planned() -> list[tuple[str, str, Any]]:
    """The parallel calls the sim makes for QUESTION: (id, name, arguments); whichever
    dialects they crossed, they arrive with these ids and arguments."""
    tools = tuple(Tool(name, parameters=schema) for name, schema in SCHEMAS.items())
    calls = sim_agent.plan_calls(tools, None, None, QUESTION)
    return [(call.id, call.name, json.loads(call.arguments)) for call in calls]


# ---------------------------------------------------------------- OpenAI SDK: tool calls


@pytest.mark.parametrize("provider", PROVIDERS)
def test_openai_stream_helper_accumulates_parallel_calls(oai: openai.OpenAI, provider: str) -> None:
    with oai.chat.completions.stream(
        model=model_of(provider, "tools"), messages=user(), tools=OPENAI_TOOLS
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_completion()
    choice = final.choices[0]
    calls = choice.message.tool_calls or []
    assert choice.finish_reason == "tool_calls"
    received = [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls]
    assert received == planned()
    assert len({call.id for call in calls}) == 2
    for call in calls:
        follows_schema(call.function.name, json.loads(call.function.arguments))
    # Text and calls in one answer; the arguments stream in pieces, not in one burst.
    assert choice.message.content == "Let me check that with `get_weather` and `search_docs`."
    assert kinds.count("tool_calls.function.arguments.delta") > 2 * len(calls)
    assert kinds.count("tool_calls.function.arguments.done") == 2
    assert "content.done" in kinds


@pytest.mark.parametrize("provider", ["sim", "openai"])  # Anthropic refuses it (below)
def test_openai_stream_helper_parses_strict_tools(
    oai: openai.OpenAI, mock: MockUpstream, provider: str, tag: str
) -> None:
    """`strict` is OpenAI's own: it reaches an OpenAI upstream as given."""
    with oai.chat.completions.stream(
        model=model_of(provider, "tools", tag=tag), messages=user(), tools=STRICT_TOOLS[:1]
    ) as stream:
        final = stream.get_final_completion()
    (call,) = final.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"
    assert call.function.parsed_arguments == json.loads(call.function.arguments)
    follows_schema("get_weather", call.function.parsed_arguments)
    if provider == "openai":
        assert sent(mock, tag)["tools"] == STRICT_TOOLS[:1]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_openai_parallel_tool_calls_false_gives_one_call(oai: openai.OpenAI, provider: str) -> None:
    with oai.chat.completions.stream(
        model=model_of(provider, "tools"),
        messages=user(),
        tools=OPENAI_TOOLS,
        parallel_tool_calls=False,
    ) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert [call.function.name for call in calls] == ["get_weather"]
    assert final.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("variant", "choice", "names"),
    [
        ("fast", {"type": "function", "function": {"name": "search_docs"}}, ["search_docs"]),
        ("fast", "required", ["get_weather", "search_docs"]),
        ("tools", "auto", ["get_weather", "search_docs"]),
        ("fast", "auto", []),
        ("tools", "none", []),
    ],
)
def test_openai_tool_choice(
    oai: openai.OpenAI, provider: str, variant: str, choice: Any, names: list[str]
) -> None:
    parts = () if variant == "fast" else (variant,)
    with oai.chat.completions.stream(
        model=model_of(provider, *parts), messages=user(), tools=OPENAI_TOOLS, tool_choice=choice
    ) as stream:
        final = stream.get_final_completion()
    choice_out = final.choices[0]
    assert [call.function.name for call in choice_out.message.tool_calls or []] == names
    assert choice_out.finish_reason == ("tool_calls" if names else "stop")
    if not names:
        assert choice_out.message.content
        assert "Let me check" not in (choice_out.message.content or "")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_openai_non_streaming_carries_the_calls(oai: openai.OpenAI, provider: str) -> None:
    completion = oai.chat.completions.create(
        model=model_of(provider, "tools"), messages=user(), tools=OPENAI_TOOLS
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [call.function.name for call in calls] == ["get_weather", "search_docs"]  # type: ignore[union-attr]
    for call in calls:
        assert call.type == "function"
        follows_schema(call.function.name, json.loads(call.function.arguments))
    assert choice.message.content == "Let me check that with `get_weather` and `search_docs`."
    assert completion.usage is not None
    assert completion.usage.completion_tokens > 0


# ---------------------------------------------------------------- OpenAI SDK: reasoning


@pytest.mark.parametrize("provider", PROVIDERS)
def test_openai_reasoning_streams_as_reasoning_content(
    oai: openai.OpenAI, mock: MockUpstream, provider: str, tag: str
) -> None:
    # Anthropic has no `reasoning_effort` (it is refused, below): an OpenAI caller asks it to
    # think with Anthropic's `thinking`, in the body, as Anthropic's own compatible API takes it.
    effort: Any = {"reasoning_effort": "low"}
    if provider == "anthropic":
        effort = {"extra_body": {"thinking": THINKING}}
    chunks = list(
        oai.chat.completions.create(
            model=model_of(provider, tag=tag),
            messages=user(),
            stream=True,
            stream_options={"include_usage": True},
            **effort,
        )
    )
    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    reasoning = "".join(getattr(delta, "reasoning_content", None) or "" for delta in deltas)
    text = "".join(delta.content or "" for delta in deltas)
    assert reasoning == sim_agent.compose_reasoning(QUESTION)
    assert text == compose_answer(QUESTION)  # the answer proper, with no reasoning in it
    first_text = next(i for i, d in enumerate(deltas) if d.content)
    last_reasoning = max(i for i, d in enumerate(deltas) if getattr(d, "reasoning_content", None))
    assert last_reasoning < first_text
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens > 0
    pieces = sum(1 for d in deltas if getattr(d, "reasoning_content", None))
    if provider == "anthropic":  # Anthropic does not count reasoning tokens apart
        assert usage.completion_tokens_details is None
        assert sent(mock, tag)["thinking"] == THINKING
    else:
        assert usage.completion_tokens_details is not None
        assert usage.completion_tokens_details.reasoning_tokens == pieces
    if provider == "openai":
        assert sent(mock, tag)["reasoning_effort"] == "low"


# ---------------------------------------------------------------- Anthropic SDK


@pytest.mark.parametrize("provider", PROVIDERS)
def test_anthropic_stream_thinks_then_calls(claude: anthropic.Anthropic, provider: str) -> None:
    # OpenAI's API has no `thinking` (it is refused, below): that upstream thinks by name.
    thinking: Any = {} if provider == "openai" else {"thinking": THINKING}
    parts = ("think", "tools") if provider == "openai" else ("tools",)
    with claude.messages.stream(
        model=model_of(provider, *parts),
        max_tokens=2048,
        messages=user(),
        tools=ANTHROPIC_TOOLS,
        **thinking,
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert [block.type for block in final.content] == ["thinking", "text", "tool_use", "tool_use"]
    thought, said, *calls = final.content
    assert thought.type == "thinking"
    assert thought.thinking == sim_agent.compose_reasoning(QUESTION)
    if provider == "openai":  # an OpenAI-compatible upstream has no signatures
        assert thought.signature == ""  # but the field is there, for the turn sent back
    else:
        assert thought.signature == sim_agent.signature(thought.thinking)
    assert said.type == "text"
    assert said.text == "Let me check that with `get_weather` and `search_docs`."
    assert final.stop_reason == "tool_use"
    assert [(c.id, c.name, c.input) for c in calls if c.type == "tool_use"] == planned()
    for call in calls:
        assert call.type == "tool_use"
        follows_schema(call.name, call.input)
    assert len({c.id for c in calls if c.type == "tool_use"}) == 2
    assert kinds.count("input_json") > 2 * len(calls)  # input_json_delta, in pieces
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("variant", "choice", "names"),
    [
        ("tools", {"type": "auto"}, ["get_weather", "search_docs"]),
        ("fast", {"type": "auto"}, []),
        ("fast", {"type": "any"}, ["get_weather", "search_docs"]),
        ("fast", {"type": "tool", "name": "search_docs"}, ["search_docs"]),
        ("tools", {"type": "none"}, []),
        ("tools", {"type": "auto", "disable_parallel_tool_use": True}, ["get_weather"]),
    ],
)
def test_anthropic_tool_choice(
    claude: anthropic.Anthropic, provider: str, variant: str, choice: Any, names: list[str]
) -> None:
    parts = () if variant == "fast" else (variant,)
    with claude.messages.stream(
        model=model_of(provider, *parts),
        max_tokens=1024,
        messages=user(),
        tools=ANTHROPIC_TOOLS,
        tool_choice=choice,
    ) as stream:
        final = stream.get_final_message()
    assert [b.name for b in final.content if b.type == "tool_use"] == names
    assert final.stop_reason == ("tool_use" if names else "end_turn")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_anthropic_non_streaming_carries_thinking_and_calls(
    claude: anthropic.Anthropic, provider: str
) -> None:
    thinking: Any = {} if provider == "openai" else {"thinking": THINKING}
    parts = ("think", "tools") if provider == "openai" else ("tools",)
    message = claude.messages.create(
        model=model_of(provider, *parts),
        max_tokens=2048,
        messages=user(),
        tools=ANTHROPIC_TOOLS,
        **thinking,
    )
    assert [block.type for block in message.content] == [
        "thinking",
        "text",
        "tool_use",
        "tool_use",
    ]
    thought = message.content[0]
    assert thought.type == "thinking"
    assert thought.thinking == sim_agent.compose_reasoning(QUESTION)
    expected = "" if provider == "openai" else sim_agent.signature(thought.thinking)
    assert thought.signature == expected
    assert message.stop_reason == "tool_use"
    for block in message.content[2:]:
        assert block.type == "tool_use"
        follows_schema(block.name, block.input)
    assert message.usage.output_tokens > 0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_anthropic_message_start_counts_the_prompt(
    claude: anthropic.Anthropic, mock: MockUpstream, provider: str, tag: str
) -> None:
    """With an Anthropic upstream, message_start carries its count (which here includes the
    tool definitions, unlike tokenrelay's estimate); otherwise an estimate that message_delta
    corrects with the upstream's count."""
    with claude.messages.stream(
        model=model_of(provider, "tools", tag=tag),
        max_tokens=1024,
        messages=user(),
        tools=ANTHROPIC_TOOLS,
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    start = next(e for e in events if e.type == "message_start")
    assert events[0].type == "message_start"
    if provider == "sim":
        assert start.message.usage.input_tokens == final.usage.input_tokens
        return
    told = _mock_answer(mock, sent(mock, tag), provider)
    assert final.usage.input_tokens == told["input_tokens"]
    estimate = len(QUESTION) // 4
    assert told["input_tokens"] > estimate  # the tools count: the test can tell them apart
    if provider == "anthropic":
        assert start.message.usage.input_tokens == told["input_tokens"]
    else:  # an OpenAI upstream counts the prompt only at the end
        assert start.message.usage.input_tokens == estimate


def _mock_answer(mock: MockUpstream, body: dict[str, Any], provider: str) -> dict[str, Any]:
    """The usage the mock itself answers `body` with, as Anthropic's figures."""
    path = "/v1/messages" if provider == "anthropic" else "/v1/chat/completions"
    untagged = "+".join(p for p in body["model"].split("+") if not p.startswith("tag-"))
    replay = {**body, "stream": False, "model": untagged}  # not in the test's own record
    answer = httpx.post(f"{mock.url}{path}", json=replay, timeout=10).json()
    usage: dict[str, Any] = answer["usage"]
    if provider == "anthropic":
        return usage
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return {"input_tokens": usage["prompt_tokens"] - cached, "output_tokens": 0}


# ---------------------------------------------------------------- honest parameters

TOOL_SPEC = {"name": "get_weather", "description": "The get weather tool"}
FORWARDED: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    (
        "openai",
        "openai",
        {
            "stop": ["END"],
            "top_p": 0.5,
            "seed": 7,
            "user": "u-42",
            "reasoning_effort": "low",
            "max_completion_tokens": 300,
            "service_tier": "auto",
            "parallel_tool_calls": False,
            "presence_penalty": 0.1,
            "frequency_penalty": 0.2,
            "temperature": 0.3,
            "tool_choice": "required",
        },
        {
            "stop": ["END"],
            "top_p": 0.5,
            "seed": 7,
            "user": "u-42",
            "reasoning_effort": "low",
            "max_completion_tokens": 300,
            "service_tier": "auto",
            "parallel_tool_calls": False,
            "presence_penalty": 0.1,
            "frequency_penalty": 0.2,
            "temperature": 0.3,
            "tool_choice": "required",
            "tools": [
                {"type": "function", "function": {**TOOL_SPEC, "parameters": WEATHER_SCHEMA}}
            ],
        },
    ),
    (
        "openai",
        "anthropic",
        {
            "stop": "END",
            "top_p": 0.5,
            "user": "u-42",
            "max_completion_tokens": 300,
            "service_tier": "auto",
            "parallel_tool_calls": False,
            "temperature": 0.3,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        },
        {
            "stop_sequences": ["END"],
            "top_p": 0.5,
            "metadata": {"user_id": "u-42"},
            "max_tokens": 300,
            "service_tier": "auto",
            "temperature": 0.3,
            "tool_choice": {
                "type": "tool",
                "name": "get_weather",
                "disable_parallel_tool_use": True,
            },
            "tools": [{**TOOL_SPEC, "input_schema": WEATHER_SCHEMA}],
        },
    ),
    (
        "anthropic",
        "anthropic",
        {
            "stop_sequences": ["END"],
            "extra_body": {"top_p": 0.5, "top_k": 40},  # the SDK no longer types them
            "metadata": {"user_id": "u-42"},
            "service_tier": "auto",
            "thinking": THINKING,
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        },
        {
            "stop_sequences": ["END"],
            "top_p": 0.5,
            "top_k": 40,
            "metadata": {"user_id": "u-42"},
            "service_tier": "auto",
            "thinking": THINKING,
            "max_tokens": 300,
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "tools": [{**TOOL_SPEC, "input_schema": WEATHER_SCHEMA}],
        },
    ),
    (
        "anthropic",
        "openai",
        {
            "stop_sequences": ["END"],
            "extra_body": {"top_p": 0.5, "temperature": 0.3},
            "metadata": {"user_id": "u-42"},
            "service_tier": "auto",
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        },
        {
            "stop": ["END"],
            "top_p": 0.5,
            "user": "u-42",
            "service_tier": "auto",
            "temperature": 0.3,
            "max_tokens": 300,
            "tool_choice": "required",
            "parallel_tool_calls": False,
            "tools": [
                {"type": "function", "function": {**TOOL_SPEC, "parameters": WEATHER_SCHEMA}}
            ],
        },
    ),
]


@pytest.mark.parametrize(
    ("dialect", "upstream", "given", "expected"),
    FORWARDED,
    ids=[f"{d}-client-{u}-upstream" for d, u, _, _ in FORWARDED],
)
def test_supported_parameters_reach_the_upstream(
    oai: openai.OpenAI,
    claude: anthropic.Anthropic,
    mock: MockUpstream,
    tag: str,
    dialect: str,
    upstream: str,
    given: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    model = model_of(upstream, tag=tag)
    if dialect == "openai":
        tools: Any = OPENAI_TOOLS[:1]
        completion = oai.chat.completions.create(model=model, messages=user(), tools=tools, **given)
        assert completion.choices[0].finish_reason == "tool_calls"  # the forced call
    else:
        message = claude.messages.create(
            model=model, max_tokens=300, messages=user(), tools=ANTHROPIC_TOOLS[:1], **given
        )
        assert message.stop_reason == "tool_use"
    body = sent(mock, tag)
    assert {name: body.get(name) for name in expected} == expected
    if upstream == "openai" and "max_completion_tokens" in expected:
        assert "max_tokens" not in body  # the limit goes under the name the caller used


REFUSED = [
    ("openai", "anthropic", "presence_penalty", {"presence_penalty": 0.5}),
    ("openai", "anthropic", "frequency_penalty", {"frequency_penalty": 0.5}),
    ("openai", "anthropic", "seed", {"seed": 7}),
    ("openai", "anthropic", "logprobs", {"logprobs": True}),
    ("openai", "anthropic", "logprobs", {"logprobs": True, "top_logprobs": 2}),
    ("openai", "anthropic", "reasoning_effort", {"reasoning_effort": "low"}),
    ("openai", "openai", "top_k", {"extra_body": {"top_k": 5}}),  # no such field in OpenAI's API
    ("anthropic", "openai", "top_k", {"extra_body": {"top_k": 5}}),
    ("anthropic", "openai", "thinking", {"thinking": THINKING}),
    ("anthropic", "anthropic", "presence_penalty", {"extra_body": {"presence_penalty": 0.5}}),
    ("anthropic", "anthropic", "seed", {"extra_body": {"seed": 7}}),
    ("anthropic", "anthropic", "logprobs", {"extra_body": {"logprobs": True}}),
    # Keys of one dialect's own, in front of the other's upstream.
    ("openai", "anthropic", "tools[0].function.strict", {"tools": STRICT_TOOLS}),
    (
        "openai",
        "anthropic",
        "messages[0].content[1].image_url.detail",  # Anthropic picks the resolution itself
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is it?"},
                        {"type": "image_url", "image_url": {"url": UNROUTABLE, "detail": "high"}},
                    ],
                }
            ]
        },
    ),
]


@pytest.mark.parametrize(
    ("dialect", "upstream", "field", "given"),
    REFUSED,
    ids=[f"{d}-client-{u}-upstream-{f}" for d, u, f, _ in REFUSED],
)
def test_unsupported_parameters_are_refused_by_name(
    oai: openai.OpenAI,
    claude: anthropic.Anthropic,
    mock: MockUpstream,
    tag: str,
    dialect: str,
    upstream: str,
    field: str,
    given: dict[str, Any],
) -> None:
    model = model_of(upstream, tag=tag)
    given = {"messages": user(), **given}
    caught: openai.BadRequestError | anthropic.BadRequestError
    if dialect == "openai":
        with pytest.raises(openai.BadRequestError) as refused:
            oai.chat.completions.create(model=model, stream=True, **given)
        caught = refused.value
        assert caught.body["type"] == "invalid_request_error"  # type: ignore[index]
        assert caught.body["param"] == field  # type: ignore[index]
    else:
        with pytest.raises(anthropic.BadRequestError) as refused_a:
            claude.messages.create(model=model, max_tokens=2048, stream=True, **given)
        caught = refused_a.value
        assert caught.body["type"] == "error"  # type: ignore[index]
        assert caught.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert caught.status_code == 400
    assert field in caught.message
    if "top_logprobs" in given:
        assert "top_logprobs" in caught.message  # each refused field is named
    assert mock.sent(tag) == []  # refused before anything reached the upstream


def test_parameters_at_their_neutral_defaults_are_not_refused(
    oai: openai.OpenAI, mock: MockUpstream, tag: str
) -> None:
    """Many clients send `presence_penalty: 0` and `logprobs: false` on every request. They ask
    for nothing an Anthropic upstream lacks, so they are left out rather than refused."""
    neutral: Any = {"presence_penalty": 0, "frequency_penalty": 0.0, "logprobs": False}
    answer = oai.chat.completions.create(
        model=model_of("anthropic", tag=tag), messages=user(), **neutral
    )
    assert answer.choices[0].message.content
    assert not set(neutral) & set(sent(mock, tag))


# ---------------------------------------------------------------- images and documents

OPENAI_PARTS: Any = [
    {"type": "text", "text": "What is in these pictures?"},
    {"type": "image_url", "image_url": {"url": UNROUTABLE}},
    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "auto"}},
    {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "r"}},
]
ANTHROPIC_BLOCKS: Any = [
    {"type": "text", "text": "What is in these pictures?"},
    {"type": "image", "source": {"type": "url", "url": UNROUTABLE}},
    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
    {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
        "title": "r",
    },
]
PNG_BYTES = len(PNG) * 3 // 4
PDF_BYTES = len(PDF) * 3 // 4
SEEN = (
    f"You sent an image (by URL, {UNROUTABLE}), an image (image/png, {PNG_BYTES:,} bytes), "
    f'a document titled "r" (application/pdf, {PDF_BYTES:,} bytes).\n\n'
)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_openai_image_and_file_parts_reach_the_upstream(
    oai: openai.OpenAI, mock: MockUpstream, provider: str, tag: str
) -> None:
    """tokenrelay never fetches the URL (nothing listens there); the sim describes the parts."""
    messages: Any = [{"role": "user", "content": OPENAI_PARTS}]
    completion = oai.chat.completions.create(model=model_of(provider, tag=tag), messages=messages)
    assert (completion.choices[0].message.content or "").startswith(SEEN)
    if provider == "sim":
        return
    received = sent(mock, tag)["messages"][0]["content"]
    if provider == "openai":
        assert received == OPENAI_PARTS
    else:  # OpenAI's `detail: "auto"` is what Anthropic does anyway
        assert received == ANTHROPIC_BLOCKS


@pytest.mark.parametrize("provider", PROVIDERS)
def test_anthropic_image_and_document_blocks_reach_the_upstream(
    claude: anthropic.Anthropic, mock: MockUpstream, provider: str, tag: str
) -> None:
    with claude.messages.stream(
        model=model_of(provider, tag=tag),
        max_tokens=1024,
        messages=[{"role": "user", "content": ANTHROPIC_BLOCKS}],
    ) as stream:
        text = "".join(stream.text_stream)
    assert text.startswith(SEEN)
    if provider == "sim":
        return
    received = sent(mock, tag)["messages"][0]["content"]
    if provider == "anthropic":
        assert received == ANTHROPIC_BLOCKS
    else:
        expected = [
            *OPENAI_PARTS[:2],
            {**OPENAI_PARTS[2], "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            OPENAI_PARTS[3],
        ]
        assert received == expected


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_plain_text_document_reaches_the_upstream(
    claude: anthropic.Anthropic, mock: MockUpstream, provider: str, tag: str
) -> None:
    document = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "The sky is green."},
        "title": "notes",
    }
    blocks: Any = [document, {"type": "text", "text": "What do my notes say?"}]
    message = claude.messages.create(
        model=model_of(provider, tag=tag),
        max_tokens=1024,
        messages=[{"role": "user", "content": blocks}],
    )
    assert message.content[0].type == "text"
    if provider == "sim":
        assert message.content[0].text.startswith('You sent a document titled "notes" (plain text)')
        return
    received = sent(mock, tag)["messages"][0]["content"]
    if provider == "anthropic":
        assert received == blocks
    else:  # OpenAI has no text documents: the text goes as a text part
        assert received == [
            {"type": "text", "text": "The sky is green."},
            {"type": "text", "text": "What do my notes say?"},
        ]


@pytest.mark.parametrize("provider", UPSTREAMS)
def test_cache_control_reaches_an_anthropic_upstream(
    claude: anthropic.Anthropic, mock: MockUpstream, provider: str, tag: str
) -> None:
    """Anthropic's `cache_control` goes to an Anthropic upstream where the caller put it; an
    OpenAI upstream caches long prompts by itself, so there the hint is left out."""
    cache = {"type": "ephemeral"}
    system: Any = [{"type": "text", "text": "You are terse.", "cache_control": cache}]
    blocks: Any = [{"type": "text", "text": QUESTION, "cache_control": cache}]
    tools: Any = [{**ANTHROPIC_TOOLS[0], "cache_control": cache}]
    message = claude.messages.create(
        model=model_of(provider, tag=tag),
        max_tokens=1024,
        system=system,
        messages=[{"role": "user", "content": blocks}],
        tools=tools,
    )
    assert message.stop_reason == "end_turn"
    body = sent(mock, tag)
    if provider == "anthropic":
        assert body["system"] == system
        assert body["messages"][0]["content"] == blocks
        assert body["tools"] == tools
    else:
        assert "cache_control" not in json.dumps(body)
        assert body["messages"][0] == {"role": "system", "content": "You are terse."}
        assert body["messages"][1] == {"role": "user", "content": QUESTION}


def test_a_document_by_url_is_refused_for_an_openai_upstream(
    claude: anthropic.Anthropic, mock: MockUpstream, tag: str
) -> None:
    blocks: Any = [
        {"type": "text", "text": "Summarise this."},
        {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
    ]
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(
            model=model_of("openai", tag=tag),
            max_tokens=1024,
            messages=[{"role": "user", "content": blocks}],
        )
    assert "messages[0].content" in caught.value.message
    assert mock.sent(tag) == []


# ---------------------------------------------------------------- usage you can bill from


@pytest.mark.parametrize("provider", PROVIDERS)
def test_messages_cut_by_a_content_filter_report_output_tokens(
    claude: anthropic.Anthropic, provider: str
) -> None:
    events = list(
        claude.messages.create(
            model=model_of(provider, "content-filter-after-5"),
            max_tokens=1024,
            messages=user(),
            stream=True,
        )
    )
    deltas = [e for e in events if e.type == "content_block_delta"]
    assert len(deltas) == 5
    (ending,) = [e for e in events if e.type == "message_delta"]
    assert ending.delta.stop_reason == "refusal"
    assert ending.usage.output_tokens >= 5
    assert events[-1].type == "message_stop"


def test_the_mock_counts_what_it_said_before_a_refusal(mock: MockUpstream) -> None:
    """The mock upstream is held to the same rule (users bill from it in their own tests)."""
    with anthropic.Anthropic(base_url=mock.url, api_key="unused", max_retries=0) as direct:
        events = list(
            direct.messages.create(
                model="fast+content-filter-after-5",
                max_tokens=1024,
                messages=user(),
                stream=True,
            )
        )
    (ending,) = [e for e in events if e.type == "message_delta"]
    assert ending.delta.stop_reason == "refusal"
    assert ending.usage.output_tokens == 5


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("fault", ["content-filter-after-5", "error-after-5"])
def test_chat_completions_send_usage_however_they_end(
    oai: openai.OpenAI, provider: str, fault: str
) -> None:
    chunks: list[Any] = []
    stream = oai.chat.completions.create(
        model=model_of(provider, fault),
        messages=user(),
        stream=True,
        stream_options={"include_usage": True},
    )
    if fault.startswith("error"):
        with pytest.raises(openai.APIError):
            chunks.extend(stream)
    else:
        chunks.extend(stream)
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
        assert finishes[-1] == "content_filter"
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) == 5
    (with_usage,) = [c for c in chunks if c.usage is not None]
    assert with_usage.choices == []
    assert with_usage.usage.completion_tokens >= 5
    assert with_usage.usage.prompt_tokens > 0
    extra = with_usage.usage.model_extra or {}
    if fault.startswith("content-filter") and provider != "sim":
        # A filter ends the answer without cutting the connection: the upstream's own count
        # of what it said comes after it, and is passed on as the upstream's.
        assert "estimated" not in extra
        assert with_usage.usage.completion_tokens == 5
        return
    # The figures tokenrelay made up are named: the count of a cut answer is ours, and so is
    # the prompt's, unless the upstream gave its own before the cut (Anthropic's
    # message_start does).
    estimated = extra["estimated"]
    assert "completion_tokens" in estimated
    if provider == "anthropic":
        assert "prompt_tokens" not in estimated
    if provider == "sim":
        assert "prompt_tokens" in estimated


CACHED = [
    ("openai", "openai"),
    ("openai", "anthropic"),
    ("anthropic", "anthropic"),
    ("anthropic", "openai"),
]


@pytest.mark.parametrize(("dialect", "upstream"), CACHED, ids=[f"{d}-{u}" for d, u in CACHED])
def test_cached_prompt_tokens_pass_through(
    oai: openai.OpenAI,
    claude: anthropic.Anthropic,
    mock: MockUpstream,
    tag: str,
    dialect: str,
    upstream: str,
) -> None:
    """The mock reports 64 prompt tokens read from its cache (`cached-64`), and 32 written to
    it (`cache-write-32`, a figure only Anthropic's API has)."""
    write = ("cache-write-32",) if upstream == "anthropic" else ()
    model = model_of(upstream, "cached-64", *write, tag=tag)
    if dialect == "openai":
        chunks = list(
            oai.chat.completions.create(
                model=model,
                messages=user(),
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        usage = chunks[-1].usage
        assert usage is not None
        assert usage.prompt_tokens_details is not None
        assert usage.prompt_tokens_details.cached_tokens == 64
        told = _mock_answer(mock, sent(mock, tag), upstream)
        assert usage.prompt_tokens == told["input_tokens"] + 64 + len(write) * 32
        return
    with claude.messages.stream(model=model, max_tokens=1024, messages=user()) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert final.usage.cache_read_input_tokens == 64
    assert final.usage.cache_creation_input_tokens == (32 if write else None)
    told = _mock_answer(mock, sent(mock, tag), upstream)
    assert final.usage.input_tokens == told["input_tokens"]
    start = next(e for e in events if e.type == "message_start")
    if upstream == "anthropic":  # the upstream's figures, before the answer
        assert start.message.usage.cache_read_input_tokens == 64
        assert start.message.usage.cache_creation_input_tokens == 32
