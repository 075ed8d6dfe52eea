"""The native stream's events as typed objects, for Python callers of `tokenrelay.client`.

Each has the event's `id` (`<stream_id>:<seq>`, what resume sends back) and `data`, the whole
payload as the server sent it, so a field added later is never out of reach.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class StreamEvent:
    id: str
    data: dict[str, Any] = field(repr=False)

    @property
    def terminal(self) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class Start(StreamEvent):
    stream_id: str = ""
    model: str = ""


@dataclass(frozen=True, slots=True)
class Token(StreamEvent):
    text: str = ""


@dataclass(frozen=True, slots=True)
class Reasoning(StreamEvent):
    """A piece of the model's reasoning, never part of the answer's text.

    A block of it ends with an event carrying its `signature` (its `content` may be empty);
    a redacted block is one event whose `redacted` holds the provider's opaque data. Both go
    back unchanged with the turn (`StreamedAnswer.message()` does that).
    """

    content: str = ""
    signature: str = ""
    redacted: str = ""


@dataclass(frozen=True, slots=True)
class ToolCall(StreamEvent):
    """One step of a tool call; calls are told apart by `index` (several may be open at once).

    `start` names the call (`call_id`, `name`); each `delta` brings a piece of the arguments'
    JSON text in `arguments`; `end` has the whole value, parsed, in `arguments`, or
    `error="invalid_json"` with the raw text in `arguments_text` (and `arguments` None), or
    `error="schema_mismatch"` with the parsed value. A delta from a stream names its call too:
    the client fills `call_id` and `name` in from the call's start.
    """

    phase: Literal["start", "delta", "end"] = "start"
    index: int = 0
    call_id: str = ""
    name: str = ""
    arguments: Any = None
    error: str = ""
    arguments_text: str = ""


@dataclass(frozen=True, slots=True)
class Logprobs(StreamEvent):
    """The scores of the text just sent (`logprobs: true`): OpenAI's entries, one a token,
    each with `token`, `logprob`, `bytes` and `top_logprobs`."""

    entries: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Usage(StreamEvent):
    """The upstream's early count (the prompt's tokens, before the answer), when it gives one.

    The final count comes with the terminal event; `usage["estimated"]`, when present, lists
    the figures tokenrelay estimated.
    """

    usage: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JsonPartial(StreamEvent):
    """The structured answer so far (`response_format`), parsed."""

    partial: Any = None


@dataclass(frozen=True, slots=True)
class Status(StreamEvent):
    message: str = ""


@dataclass(frozen=True, slots=True)
class Done(StreamEvent):
    finish_reason: str = ""
    token_count: int = 0
    usage: dict[str, Any] | None = None

    @property
    def terminal(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Error(StreamEvent):
    error_type: str = ""
    message: str = ""
    retryable: bool = False
    usage: dict[str, Any] | None = None

    @property
    def terminal(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Cancelled(StreamEvent):
    reason: str = ""
    usage: dict[str, Any] | None = None

    @property
    def terminal(self) -> bool:
        return True


def parse_event(event_id: str, data: dict[str, Any]) -> StreamEvent:
    """The typed form of one event; an unknown type stays a plain StreamEvent."""
    kind = data.get("type")
    if kind == "token":
        return Token(event_id, data, data["content"])
    if kind == "reasoning":
        return Reasoning(
            event_id, data, data["content"], data.get("signature", ""), data.get("redacted", "")
        )
    if kind == "tool_call":
        return _tool_call(event_id, data)
    if kind == "start":
        return Start(event_id, data, data["stream_id"], data["model"])
    if kind == "usage":
        return Usage(event_id, data, data["usage"])
    if kind == "logprobs":
        return Logprobs(event_id, data, data["content"])
    if kind == "json":
        return JsonPartial(event_id, data, data["partial"])
    if kind == "status":
        return Status(event_id, data, data["message"])
    if kind == "done":
        return Done(event_id, data, data["finish_reason"], data["token_count"], data.get("usage"))
    if kind == "error":
        usage = data.get("usage")
        return Error(event_id, data, data["error_type"], data["message"], data["retryable"], usage)
    if kind == "cancelled":
        return Cancelled(event_id, data, data.get("reason", ""), data.get("usage"))
    return StreamEvent(event_id, data)


def _tool_call(event_id: str, data: dict[str, Any]) -> ToolCall:
    return ToolCall(
        event_id,
        data,
        data["phase"],
        data["index"],
        data.get("id", ""),
        data.get("name", ""),
        data.get("arguments"),
        data.get("error", ""),
        data.get("arguments_text", ""),
    )
