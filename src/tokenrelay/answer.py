"""A whole answer, folded from its events: what every dialect's non-streaming response holds.

`Answer.add(event)` takes a stream's events in order; the answer then has the text, the
reasoning blocks (each with its signature, or a redacted block's data), the tool calls (their
arguments' exact text, and the parsed value or the error `tool_call` end gave), and the
terminal event's payload.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokenrelay.events import Event
from tokenrelay.providers.content import Thinking


@dataclass(slots=True)
class Call:
    index: int
    id: str
    name: str
    arguments_text: str = ""
    arguments: Any = None  # parsed, from the call's end
    error: str = ""  # "invalid_json" or "schema_mismatch", from the call's end


@dataclass(slots=True)
class Answer:
    parts: list[str] = field(default_factory=list)
    reasoning: list[Thinking] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    logprobs: list[Any] = field(default_factory=list)  # OpenAI's entries, one per token
    ending: dict[str, Any] = field(default_factory=dict)
    _thinking: list[str] = field(default_factory=list)  # the reasoning block being written

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def add(self, event: Event) -> None:
        kind = event.type
        if kind == "token":
            self.parts.append(event.payload()["content"])
        elif kind == "reasoning":
            self._reasoning(event.payload())
        elif kind == "tool_call":
            self._call(event.payload())
        elif kind == "logprobs":
            self.logprobs += event.payload()["content"]
        elif event.terminal:
            self.end_reasoning()
            self.ending = event.payload()

    def end_reasoning(self, signature: str = "") -> None:
        if self._thinking or signature:
            self.reasoning.append(Thinking("".join(self._thinking), signature))
            self._thinking = []

    def _reasoning(self, piece: dict[str, Any]) -> None:
        if piece.get("redacted"):
            self.end_reasoning()
            self.reasoning.append(Thinking(redacted=piece["redacted"]))
            return
        if piece.get("content"):
            self._thinking.append(piece["content"])
        if piece.get("signature"):
            self.end_reasoning(piece["signature"])

    def _call(self, piece: dict[str, Any]) -> None:
        phase, index = piece["phase"], piece["index"]
        if phase == "start":
            self.end_reasoning()
            self.calls.append(Call(index, piece["id"], piece["name"]))
            return
        call = next(call for call in self.calls if call.index == index)
        if phase == "delta":
            call.arguments_text += piece["arguments"]
        else:
            call.arguments = piece.get("arguments")
            call.error = piece.get("error", "")


def native_call(call: Call) -> dict[str, Any]:
    """A call as the native API gives it (and takes it back in an assistant turn's history)."""
    out: dict[str, Any] = {"id": call.id, "name": call.name}
    if call.error:
        out.update(error=call.error, arguments_text=call.arguments_text)
    if call.error != "invalid_json":
        out["arguments"] = call.arguments
    return out


def native_reasoning(block: Thinking) -> dict[str, Any]:
    """A reasoning block as the native API gives it (and takes it back in history)."""
    if block.redacted:
        return {"redacted": block.redacted}
    return {"content": block.text, "signature": block.signature}
