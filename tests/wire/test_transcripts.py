"""Provider transcripts decode to the expected deltas, however the bytes are split.

The transcripts follow the documented wire formats: OpenAI Chat Completions chunks with
`stream_options.include_usage` (a usage chunk with empty `choices`, `usage: null` elsewhere), an
OpenAI-compatible server's `choices: null` usage chunk, and Anthropic's Messages event sequence
with `ping` and an in-band `overloaded_error` after HTTP 200.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tokenrelay.errors import GenerationError, NetworkError, Overloaded, UpstreamError
from tokenrelay.events import make_event
from tokenrelay.providers.base import Delta, GenerationRequest, ToolDelta, Usage
from tokenrelay.providers.content import Message
from tokenrelay.sse import SSEDecoder
from tokenrelay.wire import anthropic, anthropic_request, openai

HERE = Path(__file__).parent / "transcripts"


def _decode(name: str, cut: int) -> tuple[list[Delta], GenerationError | None]:
    raw = (HERE / name).read_bytes()
    sse = SSEDecoder()
    is_openai = name.startswith("openai")
    wire: openai.ChunkDecoder | anthropic.EventDecoder = (
        openai.ChunkDecoder() if is_openai else anthropic.EventDecoder()
    )
    deltas: list[Delta] = []
    try:
        for piece in (raw[:cut], raw[cut:]):
            for event in sse.feed(piece):
                if isinstance(wire, openai.ChunkDecoder):
                    deltas += wire.feed(event.data)
                else:
                    deltas += wire.feed(event.event, event.data)
        wire.finish()
    except GenerationError as exc:
        return deltas, exc
    return deltas, None


def _every_cut(name: str) -> range:
    return range(len((HERE / name).read_bytes()) + 1)


OPENAI_EXPECTED = [
    Delta("Hello"),
    Delta(", café 🚀"),
    Delta("\nline"),
    Delta(finish_reason="stop"),
    Delta(usage=Usage(9, 4)),
]


def test_openai_stream_at_every_split() -> None:
    for cut in _every_cut("openai_stream.sse"):
        assert _decode("openai_stream.sse", cut) == (OPENAI_EXPECTED, None), cut


def test_openai_compatible_null_choices_usage_chunk() -> None:
    expected = [Delta("Hi"), Delta(finish_reason="length"), Delta(usage=Usage(3, 1))]
    for cut in _every_cut("openai_compatible_null_choices.sse"):
        assert _decode("openai_compatible_null_choices.sse", cut) == (expected, None)


def test_openai_inband_error_keeps_partial_and_drops_the_message() -> None:
    for cut in _every_cut("openai_inband_error.sse"):
        deltas, error = _decode("openai_inband_error.sse", cut)
        assert deltas == [Delta("Part")]
        assert isinstance(error, UpstreamError)
        assert "SECRET" not in str(error)
        assert "server_error" in str(error)


ANTHROPIC_EXPECTED = [
    Delta(usage=Usage(25, 1)),  # message_start: the prompt's count, before the answer
    Delta("Hello"),
    Delta("! Déjà vu 👋🏽"),
    Delta(finish_reason="stop", usage=Usage(25, 15)),
]


def test_anthropic_stream_at_every_split() -> None:
    for cut in _every_cut("anthropic_stream.sse"):
        assert _decode("anthropic_stream.sse", cut) == (ANTHROPIC_EXPECTED, None), cut


def test_anthropic_overloaded_after_200() -> None:
    for cut in _every_cut("anthropic_overloaded.sse"):
        deltas, error = _decode("anthropic_overloaded.sse", cut)
        assert deltas == [Delta(usage=Usage(10, 1)), Delta("Partial")]
        assert isinstance(error, Overloaded)
        assert "SECRET" not in str(error)


@pytest.mark.parametrize("name", ["openai_stream.sse", "anthropic_stream.sse"])
def test_a_cut_connection_is_an_error_never_done(name: str) -> None:
    raw = (HERE / name).read_bytes()
    terminator = b"data: [DONE]" if name.startswith("openai") else b"event: message_stop"
    truncated = raw[: raw.index(terminator)]
    sse = SSEDecoder()
    wire = openai.ChunkDecoder() if name.startswith("openai") else anthropic.EventDecoder()
    for event in sse.feed(truncated):
        if isinstance(wire, openai.ChunkDecoder):
            wire.feed(event.data)
        else:
            wire.feed(event.event, event.data)
    with pytest.raises(NetworkError):
        wire.finish()


@pytest.mark.parametrize(
    ("finish", "stop"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use")],
)
def test_finish_reasons_map_both_ways(finish: str, stop: str) -> None:
    assert anthropic.FINISH_TO_STOP[finish] == stop
    assert anthropic.STOP_TO_FINISH[stop] == finish


def test_openai_content_filter_finish_is_an_error_once_its_usage_is_counted() -> None:
    decoder = openai.ChunkDecoder()
    chunk = '{"choices":[{"index":0,"delta":{},"finish_reason":"content_filter"}]}'
    assert decoder.feed(chunk) == []
    usage = '{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14}}'
    assert decoder.feed(usage) == [Delta(usage=Usage(9, 5))]
    with pytest.raises(GenerationError) as caught:
        decoder.feed("[DONE]")
    assert caught.value.error_type == "content_filter"


@pytest.mark.parametrize("decoder", [openai.ChunkDecoder, anthropic.EventDecoder])
def test_a_filtered_stream_cut_before_its_end_is_still_filtered(decoder: type) -> None:
    wire = decoder()
    if isinstance(wire, openai.ChunkDecoder):
        wire.feed('{"choices":[{"index":0,"delta":{},"finish_reason":"content_filter"}]}')
    else:
        delta = {"type": "message_delta", "delta": {"stop_reason": "refusal"}, "usage": {}}
        assert wire.feed("message_delta", orjson.dumps(delta).decode()) == [
            Delta(usage=Usage(0, 0))
        ]
    with pytest.raises(GenerationError) as caught:
        wire.finish()
    assert caught.value.error_type == "content_filter"


def test_anthropic_json_comes_from_a_forced_tool_and_its_input_is_the_text() -> None:
    fmt = {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}
    request = GenerationRequest("m", (Message("user", "hi"),), response_format=fmt)
    body = anthropic_request.request_body(request, "claude", stream=True)
    assert body["tool_choice"] == {"type": "tool", "name": anthropic_request.JSON_TOOL}
    assert body["tools"][0]["input_schema"] == {"type": "object"}
    decoder = anthropic.EventDecoder()
    events = [
        ("message_start", {"type": "message_start", "message": {"usage": {"input_tokens": 5}}}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {
                    "type": "tool_use",
                    "id": "t",
                    "name": "json_answer",
                    "input": {},
                },
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": '{"a": '},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": "1}"},
            },
        ),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 3},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    deltas = [d for name, data in events for d in decoder.feed(name, orjson.dumps(data).decode())]
    assert "".join(d.text or "" for d in deltas) == '{"a": 1}'
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["stop"]
    assert not any(d.tool for d in deltas)  # our own tool, never the caller's call


def test_openai_parallel_calls_interleaved_by_index() -> None:
    usage = Usage(80, 40, cached_tokens=64, reasoning_tokens=0)
    expected = [
        Delta(tool=ToolDelta(0, "call_paris", "get_weather", "")),
        Delta(tool=ToolDelta(0, arguments='{"city": "Par')),
        Delta(tool=ToolDelta(1, "call_oslo", "get_weather", '{"city"')),
        Delta(tool=ToolDelta(0, arguments='is 🗼"}')),
        Delta(tool=ToolDelta(1, arguments=': "Oslo"}')),
        Delta(finish_reason="tool_calls"),
        Delta(usage=usage),
    ]
    for cut in _every_cut("openai_tools_parallel.sse"):
        assert _decode("openai_tools_parallel.sse", cut) == (expected, None), cut


def test_openai_compatible_reasoning_content_then_text() -> None:
    expected = [
        Delta(reasoning="Two and "),
        Delta(reasoning="two… four."),
        Delta("4"),
        Delta(finish_reason="stop"),
        Delta(usage=Usage(12, 9, reasoning_tokens=8)),
    ]
    for cut in _every_cut("openai_compatible_reasoning.sse"):
        assert _decode("openai_compatible_reasoning.sse", cut) == (expected, None), cut


def test_vllm_reasoning_and_whole_calls_that_share_index_0() -> None:
    # vLLM names the field `reasoning`, and some servers give each whole call index 0: a new
    # id at a known index is a new call, never more arguments for the old one.
    expected = [
        Delta(reasoning="Need the time."),
        Delta(tool=ToolDelta(0, "chatcmpl-tool-a", "clock", "{}")),
        Delta(tool=ToolDelta(1, "chatcmpl-tool-b", "calendar", '{"day": 1}')),
        Delta(finish_reason="tool_calls"),
        Delta(usage=Usage(30, 20)),
    ]
    name = "openai_compatible_vllm_reasoning_calls.sse"
    for cut in _every_cut(name):
        assert _decode(name, cut) == (expected, None), cut


def test_anthropic_thinking_signature_redacted_text_and_a_call() -> None:
    prompt = Usage(472 + 256, 2, cached_tokens=256, cache_creation_tokens=0)
    expected = [
        Delta(usage=prompt),
        Delta(reasoning="The user wants "),
        Delta(reasoning="Paris weather."),
        Delta(signature="EqQBCgIYAhIM1gbcDa9GJwZA2b3h"),
        Delta(redacted="EmwKAhgBEgy3va3pzix"),
        Delta("Let me check."),
        Delta(tool=ToolDelta(3, "toolu_01", "get_weather", "")),
        Delta(tool=ToolDelta(3, arguments='{"city": "Pa')),
        Delta(tool=ToolDelta(3, arguments='ris"}')),
        Delta(tool=ToolDelta(3, done=True)),
        Delta(finish_reason="tool_calls", usage=Usage(728, 89, 256, 0)),
    ]
    for cut in _every_cut("anthropic_thinking_tools.sse"):
        assert _decode("anthropic_thinking_tools.sse", cut) == (expected, None), cut


def test_anthropic_usage_round_trips_with_its_cache_figures() -> None:
    told = {"input_tokens": 10, "cache_read_input_tokens": 300, "cache_creation_input_tokens": 50}
    ours = anthropic.usage_in({**told, "output_tokens": 7}).as_dict()
    assert ours["prompt_tokens"] == 360  # every input token, as OpenAI counts them
    assert anthropic.usage_out(ours) == {**told, "output_tokens": 7}


def test_a_thinking_block_has_a_signature_even_when_the_upstream_gave_none() -> None:
    """Regression: an OpenAI-compatible upstream's reasoning became a thinking block with no
    `signature`, which the Anthropic SDK then sent back without one (a 400 in an agent loop).
    Anthropic's own content_block_start has `"signature": ""`."""
    encoder = anthropic.EventEncoder("msg_1", "m", 5)
    out = encoder.encode(
        [
            make_event(1, "start", stream_id="s", model="m"),
            make_event(2, "reasoning", content="Hmm."),
            make_event(3, "token", content="Yes."),
        ]
    )
    start = next(
        orjson.loads(line.removeprefix(b"data: "))
        for line in out.splitlines()
        if line.startswith(b"data: ") and b"content_block_start" in line
    )
    assert start["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
