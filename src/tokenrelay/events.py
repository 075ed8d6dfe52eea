"""The events a stream is made of, and their constructors.

A stream is an ordered sequence of events numbered from 1. It begins with `start` and ends with
exactly one terminal event: `done`, `error` or `cancelled` (the `Stream` producer guarantees this).
Between them: `token` (answer text), `reasoning` (the model's reasoning, never mixed into the
text), `tool_call` (a call's start, its arguments' pieces, its end), `usage` (the upstream's
count of the prompt, when it gives one before the answer), `logprobs` (the scores of the text
just sent, when asked for), `status` and `json`.

Each event carries its JSON payload already encoded (orjson, once, at creation): the log stores
those bytes, and every subscriber and encoder reuses them, so a token fanned out to three tabs is
serialised once. `payload()` decodes them for the few places that need a dict.
"""

from __future__ import annotations

import json
from typing import Any, Literal, NamedTuple

import orjson

from tokenrelay._types import JSONObject

EventType = Literal[
    "start",
    "token",
    "reasoning",
    "tool_call",
    "usage",
    "logprobs",
    "status",
    "json",
    "done",
    "error",
    "cancelled",
]
TERMINAL_TYPES: frozenset[str] = frozenset({"done", "error", "cancelled"})


class Event(NamedTuple):
    """One event. A named tuple rather than a frozen dataclass: one is built per token, and a
    frozen dataclass sets each field through `object.__setattr__` (about 3x slower to build).
    """

    seq: int
    type: EventType
    data: bytes  # the JSON object, "type" included, as sent on the wire

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    def payload(self) -> JSONObject:
        decoded: JSONObject = orjson.loads(self.data)
        return decoded


_TOKEN_PREFIX = b'{"type":"token","content":'
_new_event = tuple.__new__


def make_event(seq: int, type_: EventType, **fields: Any) -> Event:
    payload = {"type": type_, **fields}
    try:
        # orjson returns its whole working buffer (about 4 KiB) as the bytes object, and the
        # log keeps events for minutes: one copy makes the payload its real size.
        data = bytes(memoryview(orjson.dumps(payload)))
    except orjson.JSONEncodeError:
        # Integers past 64 bits, which a model's JSON answer may hold: the slow, exact way.
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return Event(seq, type_, data)


def token_event(seq: int, content: str) -> Event:
    # The hot path. Encoding just the string and concatenating gives the same bytes as
    # encoding the dict, is faster, and the concatenation is exactly sized (orjson's own
    # buffer would be kept otherwise; see make_event). The tuple is built directly: a
    # NamedTuple's own constructor is a Python function.
    return _new_event(Event, (seq, "token", _TOKEN_PREFIX + orjson.dumps(content) + b"}"))


def token_content_json(event: Event) -> bytes | None:
    """A token event's content as the JSON string it already holds (quotes included), or None
    if its payload is not in `token_event`'s form. Saves a decode and an encode per token for a
    dialect that re-wraps the text (OpenAI's chunks)."""
    data = event.data
    if data.startswith(_TOKEN_PREFIX) and data.endswith(b"}"):
        return data[len(_TOKEN_PREFIX) : -1]
    return None


def start_event(seq: int, stream_id: str, model: str) -> Event:
    return make_event(seq, "start", stream_id=stream_id, model=model)


def reasoning_event(seq: int, content: str = "", signature: str = "", redacted: str = "") -> Event:
    """A piece of reasoning; a `signature` closes a block of it (Anthropic's, kept byte for
    byte); `redacted` is a whole redacted block's opaque data."""
    fields: dict[str, Any] = {"content": content}
    if signature:
        fields["signature"] = signature
    if redacted:
        fields["redacted"] = redacted
    return make_event(seq, "reasoning", **fields)


def tool_call_event(seq: int, phase: str, index: int, **fields: Any) -> Event:
    """`phase` start (id, name), delta (arguments: a piece of their JSON text) or end (id,
    name, arguments: the whole value, parsed; or `error` and the raw `arguments_text`)."""
    return make_event(seq, "tool_call", phase=phase, index=index, **fields)


def usage_event(seq: int, usage: dict[str, Any]) -> Event:
    return make_event(seq, "usage", usage=usage)


def json_event(seq: int, partial: Any) -> Event:
    return make_event(seq, "json", partial=partial)


def status_event(seq: int, message: str, retry_in: float | None = None) -> Event:
    """A note on the stream's progress; `retry_in`: a retry is due in that many seconds."""
    if retry_in is None:
        return make_event(seq, "status", message=message)
    return make_event(seq, "status", message=message, retry_in=round(retry_in, 3))


def error_event(
    seq: int,
    error_type: str,
    message: str,
    retryable: bool,
    retry_after: float | None = None,
    usage: dict[str, Any] | None = None,
) -> Event:
    fields: dict[str, Any] = {"error_type": error_type, "message": message, "retryable": retryable}
    if retry_after is not None:
        fields["retry_after"] = round(retry_after, 3)
    if usage is not None:
        fields["usage"] = usage
    return make_event(seq, "error", **fields)


def cancelled_event(seq: int, reason: str, usage: dict[str, Any] | None = None) -> Event:
    if usage is None:
        return make_event(seq, "cancelled", reason=reason)
    return make_event(seq, "cancelled", reason=reason, usage=usage)
