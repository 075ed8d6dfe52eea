"""Event construction: payload bytes, terminal types, and their memory cost."""

from __future__ import annotations

import tracemalloc

import orjson
from hypothesis import given
from hypothesis import strategies as st

from tokenrelay import events as ev


@given(st.text())
def test_token_payload_is_the_dict_encoding(content: str) -> None:
    event = ev.token_event(3, content)
    assert event.data == orjson.dumps({"type": "token", "content": content})
    assert event.payload() == {"type": "token", "content": content}


def test_terminal_types() -> None:
    assert ev.cancelled_event(2, "x").terminal
    assert ev.error_event(2, "a", "b", False).terminal
    assert not ev.token_event(2, "x").terminal
    assert not ev.start_event(1, "s", "m").terminal


def test_regression_orjson_buffer_kept_alive_by_the_log() -> None:
    """orjson's result owns a ~4 KiB buffer; the log holds events for minutes, so each payload
    must cost about its own length, not a buffer's."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [ev.token_event(i, "Hel") for i in range(500)]
        kept += [ev.make_event(i, "status", message="retrying") for i in range(500)]
        per_event = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert per_event < 400, f"{per_event:.0f} bytes per event"


def test_regression_integers_past_64_bits_in_a_json_answer_are_encoded_exactly() -> None:
    event = ev.make_event(3, "done", parsed={"id": 2**70, "name": "é"})
    assert event.payload() == {"type": "done", "parsed": {"id": 2**70, "name": "é"}}
