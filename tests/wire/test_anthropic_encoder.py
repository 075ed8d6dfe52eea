"""Anthropic's stream, written from our events: blocks one after another, as the API sends
them, even when the calls came interleaved (an OpenAI upstream's parallel calls)."""

from __future__ import annotations

from typing import Any

import orjson

from tokenrelay.events import Event, EventType, make_event
from tokenrelay.sse import SSEDecoder
from tokenrelay.wire import anthropic


def _encode(events: list[tuple[EventType, dict[str, Any]]]) -> list[dict[str, Any]]:
    encoder = anthropic.EventEncoder("msg_1", "m", 10)
    made: list[Event] = [
        make_event(seq, kind, **fields) for seq, (kind, fields) in enumerate(events, 1)
    ]
    raw = b"".join(encoder.encode_one(event) for event in made)
    return [orjson.loads(e.data) for e in SSEDecoder().feed(raw) if e.data]


def _blocks(sent: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The message's blocks, as an SDK accumulates them; fails on a delta to a closed block."""
    blocks: list[dict[str, Any]] = []
    open_index = None
    for event in sent:
        if event["type"] == "content_block_start":
            assert open_index is None, "a block started inside another"
            open_index = event["index"]
            blocks.append({**event["content_block"], "json": ""})
        elif event["type"] == "content_block_delta":
            assert event["index"] == open_index, "a delta to a block not open"
            blocks[open_index]["json"] += event["delta"].get("partial_json", "")
        elif event["type"] == "content_block_stop":
            assert event["index"] == open_index
            open_index = None
    return blocks


def test_interleaved_parallel_calls_become_one_block_after_another() -> None:
    start = {"phase": "start"}
    sent = _encode(
        [
            ("start", {"stream_id": "s", "model": "m"}),
            ("tool_call", {**start, "index": 0, "id": "call_a", "name": "weather"}),
            ("tool_call", {"phase": "delta", "index": 0, "arguments": '{"city": '}),
            ("tool_call", {**start, "index": 1, "id": "call_b", "name": "time"}),
            ("tool_call", {"phase": "delta", "index": 1, "arguments": '{"tz": "CET"}'}),
            ("tool_call", {"phase": "delta", "index": 0, "arguments": '"Paris"}'}),
            ("tool_call", {"phase": "end", "index": 0, "id": "call_a", "name": "weather"}),
            ("tool_call", {"phase": "end", "index": 1, "id": "call_b", "name": "time"}),
            ("done", {"finish_reason": "tool_calls", "token_count": 0, "usage": None}),
        ]
    )
    blocks = _blocks(sent)
    assert [(b["id"], orjson.loads(b["json"])) for b in blocks] == [
        ("call_a", {"city": "Paris"}),
        ("call_b", {"tz": "CET"}),
    ]
    assert sent[-2]["delta"]["stop_reason"] == "tool_use"


def test_calls_cut_short_still_close_their_blocks() -> None:
    sent = _encode(
        [
            ("start", {"stream_id": "s", "model": "m"}),
            ("tool_call", {"phase": "start", "index": 0, "id": "a", "name": "f"}),
            ("tool_call", {"phase": "start", "index": 1, "id": "b", "name": "g"}),
            ("tool_call", {"phase": "delta", "index": 1, "arguments": "{}"}),
            ("error", {"error_type": "content_filter", "message": "x", "retryable": False}),
        ]
    )
    assert [b["id"] for b in _blocks(sent)] == ["a", "b"]
    assert sent[-2]["delta"]["stop_reason"] == "refusal"


def test_message_start_waits_past_a_retrys_status_for_the_prompts_count() -> None:
    sent = _encode(
        [
            ("start", {"stream_id": "s", "model": "m"}),
            ("status", {"message": "retrying"}),
            ("usage", {"usage": {"prompt_tokens": 1000}}),
            ("token", {"content": "Hi"}),
            ("done", {"finish_reason": "stop", "token_count": 1, "usage": None}),
        ]
    )
    assert sent[0]["type"] == "message_start"
    assert sent[0]["message"]["usage"]["input_tokens"] == 1000
