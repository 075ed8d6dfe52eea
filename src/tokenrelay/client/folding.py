"""A stream's answer assembled from its events: the text, the reasoning blocks, the tool calls.

Every stream keeps one (`stream.answer`), updated as the caller iterates, so a caller that
prints tokens as they come can still read the finished calls afterwards, and send the turn
back with `answer.message()`. The rules are the server's own (`tokenrelay.answer`), so a
streamed answer folds to what `POST /api/chat` returns whole: a reasoning block ends at its
signature, at a redacted block, when a tool call starts, or when the stream ends.

Pieces are kept in lists and joined when read: a long answer costs no quadratic copying.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from tokenrelay.client.events import (
    Cancelled,
    Done,
    Error,
    Reasoning,
    StreamEvent,
    Token,
    ToolCall,
    Usage,
)


@dataclass(frozen=True, slots=True)
class ReasoningBlock:
    content: str = ""
    signature: str = ""  # the provider's (Anthropic's); it must go back unchanged
    redacted: str = ""  # a redacted block's opaque data (its content is then "")

    def as_message_part(self) -> dict[str, str]:
        """The block as an assistant turn's `reasoning` entry takes it back."""
        if self.redacted:
            return {"redacted": self.redacted}
        return {"content": self.content, "signature": self.signature}


@dataclass(frozen=True, slots=True)
class AssembledCall:
    """One tool call, as far as it has come."""

    index: int
    call_id: str
    name: str
    arguments_text: str = ""  # the arguments' JSON text as streamed so far
    arguments: Any = None  # the parsed value, once ended (None with invalid_json)
    error: str = ""  # "invalid_json" or "schema_mismatch", from the call's end
    ended: bool = False

    def as_message_call(self) -> dict[str, Any]:
        """The call as an assistant turn's `tool_calls` entry takes it back (arguments that
        were not valid JSON go back as the text the model wrote)."""
        arguments = self.arguments_text if self.error == "invalid_json" else self.arguments
        return {"id": self.call_id, "name": self.name, "arguments": arguments}


def assistant_message(
    content: str, calls: list[AssembledCall], reasoning: list[ReasoningBlock]
) -> dict[str, Any]:
    """An assistant turn for the next request's `messages`; calls that never ended are left
    out (their arguments are incomplete)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    ended = [call.as_message_call() for call in calls if call.ended]
    if ended:
        message["tool_calls"] = ended
    if reasoning:
        message["reasoning"] = [block.as_message_part() for block in reasoning]
    return message


@dataclass(slots=True)
class _CallParts:
    index: int
    call_id: str
    name: str
    pieces: list[str] = field(default_factory=list)
    end: ToolCall | None = None

    def assembled(self) -> AssembledCall:
        end = self.end
        if end is None:
            return AssembledCall(self.index, self.call_id, self.name, "".join(self.pieces))
        text = end.arguments_text or "".join(self.pieces)
        return AssembledCall(
            self.index, self.call_id, self.name, text, end.arguments, end.error, ended=True
        )


class StreamedAnswer:
    """The answer so far. `add(event)` takes a stream's events in order."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._blocks: list[ReasoningBlock] = []
        self._thinking: list[str] = []  # the pieces of the reasoning block being written
        self._calls: dict[int, _CallParts] = {}  # by index, in the order they started
        self.usage: dict[str, Any] | None = None  # the latest count: early, then final
        self.ending: Done | Error | Cancelled | None = None

    @property
    def content(self) -> str:
        return "".join(self._text)

    @property
    def reasoning(self) -> list[ReasoningBlock]:
        """The reasoning blocks, the one being written (unsigned yet) included."""
        if self._thinking:
            return [*self._blocks, ReasoningBlock("".join(self._thinking))]
        return list(self._blocks)

    @property
    def tool_calls(self) -> list[AssembledCall]:
        return [parts.assembled() for parts in self._calls.values()]

    @property
    def finish_reason(self) -> str | None:
        """`done`'s reason (`stop`, `length`, `tool_calls`, ...); None until then, or if the
        stream ended with an error or a cancel."""
        return self.ending.finish_reason if isinstance(self.ending, Done) else None

    def message(self) -> dict[str, Any]:
        """This answer as the assistant turn of the next request's `messages`."""
        return assistant_message(self.content, self.tool_calls, self.reasoning)

    def add(self, event: StreamEvent) -> StreamEvent:
        """Fold one event in. Returns it, a tool-call delta with its call's id and name filled
        in (the wire leaves them out of deltas)."""
        if isinstance(event, Token):
            self._text.append(event.text)
        elif isinstance(event, Reasoning):
            self._reason(event)
        elif isinstance(event, ToolCall):
            return self._call(event)
        elif isinstance(event, Usage):
            self.usage = event.usage
        elif isinstance(event, Done | Error | Cancelled):
            self._end_reasoning()
            self.ending = event
            self.usage = event.usage or self.usage
        return event

    def _reason(self, event: Reasoning) -> None:
        if event.redacted:
            self._end_reasoning()
            self._blocks.append(ReasoningBlock(redacted=event.redacted))
            return
        if event.content:
            self._thinking.append(event.content)
        if event.signature:
            self._end_reasoning(event.signature)

    def _end_reasoning(self, signature: str = "") -> None:
        if self._thinking or signature:
            self._blocks.append(ReasoningBlock("".join(self._thinking), signature))
            self._thinking = []

    def _call(self, event: ToolCall) -> ToolCall:
        parts = self._calls.get(event.index)
        if parts is None:  # a start, normally; a delta or end only if this began mid-stream
            self._end_reasoning()
            parts = self._calls[event.index] = _CallParts(event.index, event.call_id, event.name)
        if event.phase == "delta":
            parts.pieces.append(event.arguments or "")
            return replace(event, call_id=parts.call_id, name=parts.name)
        if event.phase == "end":
            parts.end = event
            parts.call_id, parts.name = event.call_id or parts.call_id, event.name or parts.name
        return event
