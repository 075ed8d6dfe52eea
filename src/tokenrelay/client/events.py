"""The native stream's events as typed objects, for Python callers of `tokenrelay.client`.

Each has the event's `id` (`<stream_id>:<seq>`, what resume sends back) and `data`, the whole
payload as the server sent it, so a field added later is never out of reach.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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

    @property
    def terminal(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Cancelled(StreamEvent):
    reason: str = ""

    @property
    def terminal(self) -> bool:
        return True


def parse_event(event_id: str, data: dict[str, Any]) -> StreamEvent:
    """The typed form of one event; an unknown type stays a plain StreamEvent."""
    kind = data.get("type")
    if kind == "token":
        return Token(event_id, data, data["content"])
    if kind == "start":
        return Start(event_id, data, data["stream_id"], data["model"])
    if kind == "json":
        return JsonPartial(event_id, data, data["partial"])
    if kind == "status":
        return Status(event_id, data, data["message"])
    if kind == "done":
        return Done(event_id, data, data["finish_reason"], data["token_count"], data.get("usage"))
    if kind == "error":
        return Error(event_id, data, data["error_type"], data["message"], data["retryable"])
    if kind == "cancelled":
        return Cancelled(event_id, data, data.get("reason", ""))
    return StreamEvent(event_id, data)
