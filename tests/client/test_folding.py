"""Typed events and the assembled answer, from payloads written out (no server)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tokenrelay.client import (
    AssembledCall,
    Cancelled,
    Done,
    Error,
    Reasoning,
    ReasoningBlock,
    StreamedAnswer,
    StreamEvent,
    Token,
    ToolCall,
    Usage,
)
from tokenrelay.client.events import parse_event

ESTIMATED = {"prompt_tokens": 4, "completion_tokens": 9, "total_tokens": 13}
ESTIMATED_USAGE = {**ESTIMATED, "estimated": ["prompt_tokens", "total_tokens"]}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            {"type": "reasoning", "content": "Let me"},
            Reasoning("s:1", {}, "Let me"),
        ),
        (
            {"type": "reasoning", "content": "", "signature": "sig=="},
            Reasoning("s:1", {}, "", signature="sig=="),
        ),
        (
            {"type": "reasoning", "content": "", "redacted": "opaque"},
            Reasoning("s:1", {}, "", redacted="opaque"),
        ),
        (
            {"type": "tool_call", "phase": "start", "index": 1, "id": "call_a", "name": "f"},
            ToolCall("s:1", {}, "start", 1, "call_a", "f"),
        ),
        (
            {"type": "tool_call", "phase": "delta", "index": 1, "arguments": '{"ci'},
            ToolCall("s:1", {}, "delta", 1, arguments='{"ci'),
        ),
        (
            {
                "type": "tool_call",
                "phase": "end",
                "index": 1,
                "id": "call_a",
                "name": "f",
                "arguments": {"city": "Paris"},
            },
            ToolCall("s:1", {}, "end", 1, "call_a", "f", {"city": "Paris"}),
        ),
        (
            {
                "type": "tool_call",
                "phase": "end",
                "index": 0,
                "id": "call_b",
                "name": "f",
                "error": "invalid_json",
                "arguments_text": '{"city": "Par',
            },
            ToolCall("s:1", {}, "end", 0, "call_b", "f", None, "invalid_json", '{"city": "Par'),
        ),
        (
            {"type": "usage", "usage": ESTIMATED},
            Usage("s:1", {}, ESTIMATED),
        ),
        (
            {
                "type": "error",
                "error_type": "stalled",
                "message": "m",
                "retryable": True,
                "usage": ESTIMATED_USAGE,
            },
            Error("s:1", {}, "stalled", "m", True, ESTIMATED_USAGE),
        ),
        (
            {"type": "cancelled", "reason": "cancelled_by_request", "usage": ESTIMATED_USAGE},
            Cancelled("s:1", {}, "cancelled_by_request", ESTIMATED_USAGE),
        ),
    ],
)
def test_parse_event_types_the_new_events(payload: dict[str, Any], expected: StreamEvent) -> None:
    event = parse_event("s:1", payload)
    assert replace(event, data={}) == expected
    assert event.data is payload


def _fold(*payloads: dict[str, Any]) -> tuple[StreamedAnswer, list[StreamEvent]]:
    answer = StreamedAnswer()
    events = [answer.add(parse_event(f"s:{i}", p)) for i, p in enumerate(payloads, 1)]
    return answer, events


def _call(phase: str, index: int, **fields: Any) -> dict[str, Any]:
    return {"type": "tool_call", "phase": phase, "index": index, **fields}


def _reasoning(content: str, **fields: str) -> dict[str, Any]:
    return {"type": "reasoning", "content": content, **fields}


DONE_TOOL_CALLS = {"type": "done", "finish_reason": "tool_calls", "token_count": 0}


def test_interleaved_parallel_calls_are_assembled_apart_and_deltas_name_their_call() -> None:
    answer, events = _fold(
        _call("start", 0, id="call_w", name="get_weather"),
        _call("start", 1, id="call_t", name="get_time"),
        _call("delta", 1, arguments='{"city":'),
        _call("delta", 0, arguments='{"city": "Pa'),
        _call("delta", 1, arguments=' "Oslo"}'),
        _call("delta", 0, arguments='ris"}'),
        _call("end", 1, id="call_t", name="get_time", arguments={"city": "Oslo"}),
        _call("end", 0, id="call_w", name="get_weather", arguments={"city": "Paris"}),
        DONE_TOOL_CALLS,
    )
    assert answer.tool_calls == [
        AssembledCall(
            0, "call_w", "get_weather", '{"city": "Paris"}', {"city": "Paris"}, ended=True
        ),
        AssembledCall(1, "call_t", "get_time", '{"city": "Oslo"}', {"city": "Oslo"}, ended=True),
    ]
    deltas = [e for e in events if isinstance(e, ToolCall) and e.phase == "delta"]
    assert [(d.call_id, d.name) for d in deltas] == [
        ("call_t", "get_time"),
        ("call_w", "get_weather"),
        ("call_t", "get_time"),
        ("call_w", "get_weather"),
    ]
    assert "name" not in deltas[0].data  # the wire's payload is left as it came
    assert answer.finish_reason == "tool_calls"


def test_a_call_in_progress_shows_its_arguments_so_far_and_is_not_sent_back() -> None:
    answer, _ = _fold(
        _call("start", 0, id="call_w", name="get_weather"), _call("delta", 0, arguments='{"ci')
    )
    assert answer.tool_calls == [AssembledCall(0, "call_w", "get_weather", '{"ci')]
    assert "tool_calls" not in answer.message()


def test_bad_calls_keep_their_flags_and_invalid_json_goes_back_as_text() -> None:
    answer, _ = _fold(
        _call("start", 0, id="call_a", name="f"),
        _call("delta", 0, arguments='{"x": '),
        _call("end", 0, id="call_a", name="f", error="invalid_json", arguments_text='{"x": '),
        _call("start", 1, id="call_b", name="f"),
        _call("delta", 1, arguments='{"x": "y"}'),
        _call("end", 1, id="call_b", name="f", error="schema_mismatch", arguments={"x": "y"}),
        DONE_TOOL_CALLS,
    )
    invalid, mismatched = answer.tool_calls
    assert (invalid.error, invalid.arguments, invalid.arguments_text) == (
        "invalid_json",
        None,
        '{"x": ',
    )
    assert (mismatched.error, mismatched.arguments) == ("schema_mismatch", {"x": "y"})
    assert answer.message()["tool_calls"] == [
        {"id": "call_a", "name": "f", "arguments": '{"x": '},
        {"id": "call_b", "name": "f", "arguments": {"x": "y"}},
    ]


def test_reasoning_blocks_end_at_a_signature_a_redacted_block_a_call_or_the_end() -> None:
    answer, _ = _fold(
        _reasoning("First"),
        _reasoning(" thought."),
        _reasoning("", signature="sig1"),
        _reasoning("", redacted="opaque"),
        _reasoning("Unsigned"),
        _call("start", 0, id="call_a", name="f"),
        _call("end", 0, id="call_a", name="f", arguments={}),
        _reasoning("After the call"),
        {"type": "token", "content": "Answer."},
        DONE_TOOL_CALLS,
    )
    assert answer.reasoning == [
        ReasoningBlock("First thought.", "sig1"),
        ReasoningBlock(redacted="opaque"),
        ReasoningBlock("Unsigned"),
        ReasoningBlock("After the call"),
    ]
    assert answer.content == "Answer."
    assert answer.message() == {
        "role": "assistant",
        "content": "Answer.",
        "tool_calls": [{"id": "call_a", "name": "f", "arguments": {}}],
        "reasoning": [
            {"content": "First thought.", "signature": "sig1"},
            {"redacted": "opaque"},
            {"content": "Unsigned", "signature": ""},
            {"content": "After the call", "signature": ""},
        ],
    }


def test_the_block_being_written_is_readable_before_it_ends() -> None:
    answer, _ = _fold(_reasoning("Half a"), _reasoning(" thought"))
    assert answer.reasoning == [ReasoningBlock("Half a thought")]
    answer.add(parse_event("s:3", _reasoning("", signature="sig")))
    assert answer.reasoning == [ReasoningBlock("Half a thought", "sig")]


def test_usage_is_the_early_count_until_the_ending_brings_the_final_one() -> None:
    early = {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}
    final = {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42}
    answer, events = _fold({"type": "usage", "usage": early}, {"type": "token", "content": "Hi"})
    assert isinstance(events[0], Usage)
    assert answer.usage == early
    answer.add(parse_event("s:3", {"type": "done", "finish_reason": "stop", "token_count": 1}))
    assert answer.usage == early  # a done without usage keeps what was known
    answer.add(Done("s:4", {}, "stop", 1, final))
    assert answer.usage == final


def test_an_answer_that_failed_keeps_its_text_and_has_no_finish_reason() -> None:
    answer, events = _fold(
        {"type": "token", "content": "Part"},
        {
            "type": "error",
            "error_type": "network_error",
            "message": "m",
            "retryable": True,
            "usage": ESTIMATED_USAGE,
        },
    )
    assert isinstance(events[0], Token)
    assert isinstance(answer.ending, Error)
    assert answer.finish_reason is None
    assert answer.usage == ESTIMATED_USAGE
    assert answer.message() == {"role": "assistant", "content": "Part"}
