"""OpenAI chunks as the compatible endpoint renders them: the token fast path is exact."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from tokenrelay import events as ev
from tokenrelay.wire.openai import ChunkEncoder

_ENCODER = ChunkEncoder("chatcmpl-x", 'sim/"quoted" model', 1_700_000_000, include_usage=True)


@given(st.text())
def test_a_token_chunk_is_what_encoding_the_whole_object_gives(content: str) -> None:
    event = ev.token_event(3, content)
    fast = _ENCODER.encode([event])
    slow = _ENCODER._chunk({"content": content})
    assert fast == slow
    chunk = orjson.loads(fast.removeprefix(b"data: "))
    assert chunk["choices"][0]["delta"] == {"content": content}
    assert chunk["model"] == 'sim/"quoted" model'


def test_a_token_payload_in_another_form_takes_the_slow_path() -> None:
    event = ev.make_event(3, "token", extra=1, content="hi")  # content not last: no fast path
    assert ev.token_content_json(event) is None
    chunk = orjson.loads(_ENCODER.encode([event]).removeprefix(b"data: "))
    assert chunk["choices"][0]["delta"] == {"content": "hi"}


def test_several_events_are_one_write_in_order() -> None:
    events = [ev.token_event(2, "a"), ev.token_event(3, "b")]
    body = _ENCODER.encode(events)
    assert body == _ENCODER.encode(events[:1]) + _ENCODER.encode(events[1:])
