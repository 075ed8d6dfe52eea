"""SSE encoding and WHATWG decoding: byte strings written out, and properties."""

from __future__ import annotations

import itertools

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenrelay.events import token_event
from tokenrelay.sse import (
    PING,
    ServerSentEvent,
    SSEDecoder,
    encode_comment,
    encode_event,
)
from tokenrelay.wire.native import NativeEncoder


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"data": "hello"}, b"data: hello\n\n"),
        ({"data": ""}, b"data: \n\n"),
        ({"data": "a\nb"}, b"data: a\ndata: b\n\n"),
        ({"data": "a\r\nb\rc"}, b"data: a\ndata: b\ndata: c\n\n"),
        ({"data": "x", "id": "s:1"}, b"id: s:1\ndata: x\n\n"),
        ({"data": "x", "event": "token", "retry": 3000}, b"event: token\nretry: 3000\ndata: x\n\n"),
        ({"data": "\u00e9\U0001f600"}, "data: \u00e9\U0001f600\n\n".encode()),
    ],
)
def test_encode_event(kwargs: dict[str, object], expected: bytes) -> None:
    assert encode_event(**kwargs) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\x00b"])
def test_encode_event_rejects_line_breaks_in_id(bad: str) -> None:
    with pytest.raises(ValueError, match="id"):
        encode_event("x", id=bad)


def test_native_events_and_comments() -> None:
    assert NativeEncoder("s").encode_one(token_event(2, "a")) == (
        b'id: s:2\ndata: {"type":"token","content":"a"}\n\n'
    )
    assert encode_comment("ping") == PING == b": ping\n\n"
    assert encode_comment("a\nb") == b": a\n: b\n\n"


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (b"data: a\n\n", [ServerSentEvent("a")]),
        (b"data:a\n\n", [ServerSentEvent("a")]),
        (b"data:  a\n\n", [ServerSentEvent(" a")]),
        (b"data: a\r\n\r\n", [ServerSentEvent("a")]),
        (b"data: a\r\rdata: b\r\r", [ServerSentEvent("a"), ServerSentEvent("b")]),
        (b"data: a\ndata: b\n\n", [ServerSentEvent("a\nb")]),
        (b"data\n\n", [ServerSentEvent("")]),
        (b": comment\n\n", []),
        (b"event: x\n\n", []),  # no data: not dispatched
        (b"\xef\xbb\xbfdata: bom\n\n", [ServerSentEvent("bom")]),
        (
            b"id: 7\ndata: a\n\ndata: b\n\n",
            [ServerSentEvent("a", id="7"), ServerSentEvent("b", id="7")],
        ),
        (b"id: 1\x002\ndata: a\n\n", [ServerSentEvent("a")]),  # NUL in id: ignored
        (b"retry: 10\ndata: a\n\n", [ServerSentEvent("a", retry=10)]),
        (b"retry: 1x\ndata: a\n\n", [ServerSentEvent("a")]),
        (b"event: token\ndata: a\n\n", [ServerSentEvent("a", event="token")]),
        (b"unknown: x\ndata: a\n\n", [ServerSentEvent("a")]),
        (b"data: never finished\n", []),
    ],
)
def test_decoder(stream: bytes, expected: list[ServerSentEvent]) -> None:
    decoder = SSEDecoder()
    assert decoder.feed(stream) + decoder.close() == expected


def test_decoder_crlf_split_across_chunks_is_one_line_break() -> None:
    decoder = SSEDecoder()
    got = decoder.feed(b"data: a\r") + decoder.feed(b"\ndata: b\r") + decoder.feed(b"\n\r\n")
    assert got == [ServerSentEvent("a\nb")]


def test_decoder_joins_utf8_split_inside_a_character() -> None:
    raw = "data: caf\u00e9 \U0001f680\n\n".encode()
    decoder = SSEDecoder()
    got = [e for i in range(len(raw)) for e in decoder.feed(raw[i : i + 1])]
    assert got == [ServerSentEvent("caf\u00e9 \U0001f680")]


def _decode_in_pieces(raw: bytes, cuts: list[int]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    bounds = [0, *sorted({c % (len(raw) + 1) for c in cuts}), len(raw)]
    events = []
    for start, end in itertools.pairwise(bounds):
        events += decoder.feed(raw[start:end])
    return events + decoder.close()


@given(st.text(), st.lists(st.integers(min_value=0), max_size=8))
def test_json_token_round_trips_byte_for_byte(text: str, cuts: list[int]) -> None:
    """Any text, CR and LF and unicode included, survives as tokenrelay sends it."""
    raw = NativeEncoder("s").encode_one(token_event(1, text))
    [event] = _decode_in_pieces(raw, cuts)
    assert orjson.loads(event.data)["content"] == text
    assert event.id == "s:1"


@given(st.text(), st.lists(st.integers(min_value=0), max_size=8))
def test_text_data_round_trips_with_line_breaks_normalised(text: str, cuts: list[int]) -> None:
    """Plain text data comes back with CR and CRLF as LF: all SSE can carry (see sse.py)."""
    [event] = _decode_in_pieces(encode_event(text, id="s:1"), cuts)
    assert event.data == text.replace("\r\n", "\n").replace("\r", "\n")


@given(st.lists(st.text(), min_size=1, max_size=5), st.lists(st.integers(min_value=0), max_size=8))
def test_any_byte_split_gives_the_same_events(texts: list[str], cuts: list[int]) -> None:
    raw = b"".join(encode_event(t, id=f"s:{i}") for i, t in enumerate(texts))
    assert _decode_in_pieces(raw, cuts) == _decode_in_pieces(raw, [])


_UPSTREAM_LINES = st.one_of(
    st.text().map(lambda t: encode_event(t)),  # `data:` lines only: the fast path's case
    st.text().map(lambda t: encode_event(t, id="u:1", event="delta", retry=5)),
    st.just(b": keep-alive\n\n"),
    st.just(b"data:no-space\n\n"),
    st.just(b"\n"),
)


@given(st.lists(_UPSTREAM_LINES, min_size=1, max_size=8), st.lists(st.booleans(), max_size=8))
def test_event_sized_chunks_decode_as_byte_by_byte_feeding_does(
    events: list[bytes], joins: list[bool]
) -> None:
    """Chunks that end on an event boundary may take the fast path; nothing may differ from
    the one-byte-at-a-time decoding, which never takes it (ids and retry carry across)."""
    chunks: list[bytes] = []
    for i, event in enumerate(events):
        if chunks and i < len(joins) and joins[i]:
            chunks[-1] += event  # several events in one read, as a busy upstream sends them
        else:
            chunks.append(event)
    fast = SSEDecoder()
    got = [e for chunk in chunks for e in fast.feed(chunk)] + fast.close()
    slow = SSEDecoder()
    raw = b"".join(chunks)
    want = [e for i in range(len(raw)) for e in slow.feed(raw[i : i + 1])] + slow.close()
    assert got == want


def test_the_fast_path_is_taken_for_plain_data_events() -> None:
    decoder = SSEDecoder()
    decoder.feed(b'data: {"a": 1}\n\n')  # the first chunk: general path (it may carry a BOM)
    decoder._utf8 = None  # type: ignore[assignment]  # the fast path never touches the codec
    assert decoder.feed(b"data: x\n\ndata: y\n\n") == [
        ServerSentEvent("x"),
        ServerSentEvent("y"),
    ]
