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
from tokenrelay.providers.base import Delta, GenerationRequest, Message, Usage
from tokenrelay.sse import SSEDecoder
from tokenrelay.wire import anthropic, openai

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
        assert deltas == [Delta("Partial")]
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


def test_openai_content_filter_finish_is_an_error() -> None:
    decoder = openai.ChunkDecoder()
    chunk = '{"choices":[{"index":0,"delta":{},"finish_reason":"content_filter"}]}'
    with pytest.raises(GenerationError) as caught:
        decoder.feed(chunk)
    assert caught.value.error_type == "content_filter"


def test_anthropic_json_comes_from_a_forced_tool_and_its_input_is_the_text() -> None:
    fmt = {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}
    request = GenerationRequest("m", (Message("user", "hi"),), response_format=fmt)
    body = anthropic.request_body(request, "claude", stream=True)
    assert body["tool_choice"] == {"type": "tool", "name": anthropic.JSON_TOOL}
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
