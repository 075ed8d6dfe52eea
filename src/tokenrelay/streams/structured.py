"""An answer's parts that are not its text, as events: reasoning and tool calls.

`Structured` takes the reasoning and tool-call pieces of a provider's deltas and emits the
events for them, in order:

    reasoning    each piece of reasoning text; a block's signature, or a redacted block
    tool_call    start (index, id, name) when a call begins; delta (arguments: a piece of
                 their JSON) as they stream; end (id, name, arguments parsed) when the call
                 ends, or the answer does

A call whose arguments are not valid JSON ends with `error: "invalid_json"` and the raw text
in `arguments_text`; with `validate` set, arguments that break the tool's schema end with
`error: "schema_mismatch"`. Either way the stream goes on: the caller decides what to do.

The producer (`Stream`) and the mock upstream both use it, so a call looks the same whichever
wrote it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from tokenrelay.events import EventType
from tokenrelay.providers.base import ToolDelta
from tokenrelay.providers.content import Tool
from tokenrelay.schemas import first_error, validator

Emit = Callable[[EventType, dict[str, Any]], None]


@dataclass(slots=True)
class _Call:
    index: int
    id: str
    name: str
    pieces: list[str] = field(default_factory=list)


class Structured:
    def __init__(
        self,
        emit: Emit,
        *,
        tools: tuple[Tool, ...] = (),
        validate: bool = False,
        include_reasoning: bool = True,
    ) -> None:
        self._emit = emit
        # Validators are built when a call needs one: most answers make no call.
        self._schemas = {tool.name: tool.parameters for tool in tools} if validate else {}
        self._include_reasoning = include_reasoning
        self._open: dict[int, _Call] = {}  # by the provider's position
        self.calls = 0  # calls begun
        self.reasoned = False  # any reasoning was given
        self.pieces = 0  # reasoning and argument pieces, for estimates of completion tokens

    @property
    def in_call(self) -> bool:
        """Whether a call has begun and not ended (an answer cut there cannot be continued)."""
        return bool(self._open)

    def reasoning(self, content: str, signature: str, redacted: str) -> None:
        self.reasoned = True
        self.pieces += 1
        if not self._include_reasoning:
            return
        fields: dict[str, Any] = {"content": content}
        if signature:
            fields["signature"] = signature
        if redacted:
            fields["redacted"] = redacted
        self._emit("reasoning", fields)

    def tool(self, delta: ToolDelta) -> None:
        call = self._open.get(delta.position)
        if call is None:
            call_id = delta.id or f"call_{self.calls}"  # some servers give none
            call = self._open[delta.position] = _Call(self.calls, call_id, delta.name)
            self.calls += 1
            self._emit(
                "tool_call",
                {"phase": "start", "index": call.index, "id": call.id, "name": call.name},
            )
        if delta.arguments:
            self.pieces += 1
            call.pieces.append(delta.arguments)
            self._emit(
                "tool_call", {"phase": "delta", "index": call.index, "arguments": delta.arguments}
            )
        if delta.done:
            self._end(self._open.pop(delta.position))

    def finish(self) -> None:
        """The answer ended: every call still open ends with it."""
        for position in sorted(self._open):
            self._end(self._open.pop(position))

    def _end(self, call: _Call) -> None:
        text = "".join(call.pieces)
        fields: dict[str, Any] = {
            "phase": "end",
            "index": call.index,
            "id": call.id,
            "name": call.name,
        }
        try:
            arguments = orjson.loads(text) if text.strip() else {}
        except orjson.JSONDecodeError:
            self._emit("tool_call", {**fields, "error": "invalid_json", "arguments_text": text})
            return
        schema = self._schemas.get(call.name)
        if schema is not None and not _follows(arguments, schema):
            fields["error"] = "schema_mismatch"
        self._emit("tool_call", {**fields, "arguments": arguments})


def _follows(value: Any, schema: dict[str, Any]) -> bool:
    """Whether `value` follows `schema` (checked when the request came: schemas.py)."""
    return first_error(validator(schema), value) is None
