"""Anthropic Messages streaming, both ways.

Upstream: `EventDecoder.feed_sse(event)` takes each SSE event (Anthropic names every event)
and returns Deltas: the prompt's count from `message_start` (cached tokens included), text
from `text_delta`, reasoning from `thinking` blocks (`thinking_delta`, and the
`signature_delta` that closes the block, byte for byte), `redacted_thinking` blocks whole, tool
calls from `tool_use` blocks (`input_json_delta` pieces; a call given whole in its block's
`input` is one piece), `stop_reason` and output tokens from `message_delta`. `ping` is ignored,
an in-band `error` event (such as `overloaded_error` after HTTP 200) is raised as a
GenerationError, and `finish()` raises NetworkError if the stream was cut before
`message_stop`.

Downstream: `EventEncoder` renders our events as Anthropic's sequence: `message_start` (with
the upstream's own prompt count when a `usage` event brought one, else an estimate), then one
content block per kind as the answer switches between them (thinking, text, tool_use, in the
order they come), `message_delta`, `message_stop`. So the official SDK's `messages.stream()`,
`text_stream` and `get_final_message()` work. Failures become the in-band `error` event; our
`content_filter` becomes `stop_reason: "refusal"`, as Anthropic reports a refusal.

Requests, both ways, are in `anthropic_request.py`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson

from tokenrelay.answer import Answer
from tokenrelay.errors import (
    ContentFiltered,
    GenerationError,
    NetworkError,
    Overloaded,
    RateLimited,
    UpstreamError,
    client_message,
)
from tokenrelay.events import Event
from tokenrelay.providers.base import Delta, ToolDelta, Usage
from tokenrelay.sse import ServerSentEvent
from tokenrelay.wire import common
from tokenrelay.wire.anthropic_request import JSON_TOOL
from tokenrelay.wire.common import as_int, named_event, safe_label

STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
}
FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
ERROR_TYPES = {  # our error types as Anthropic's error `type` values
    "invalid_json": "invalid_request_error",
    "invalid_request": "invalid_request_error",
    "unsupported_media_type": "invalid_request_error",
    "unknown_model": "not_found_error",
    "not_found": "not_found_error",
    "method_not_allowed": "invalid_request_error",
    "payload_too_large": "request_too_large",
    "service_unavailable": "overloaded_error",
    "store_unavailable": "overloaded_error",
    "rate_limit": "rate_limit_error",
    "overloaded": "overloaded_error",
    "upstream_rejected": "invalid_request_error",
    "unauthorized": "authentication_error",
    "model_not_allowed": "permission_error",
    "key_limit": "rate_limit_error",
    "timeout": "timeout_error",
}


def error_object(error_type: str, message: str, param: str | None = None) -> dict[str, Any]:
    """Anthropic's error object for one of our error types (it has no `param`)."""
    kind = ERROR_TYPES.get(error_type, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def error_from_body(error: Any) -> GenerationError:
    error = error if isinstance(error, dict) else {}
    kind = safe_label(error.get("type"))
    detail = f"anthropic error type={kind}"
    if kind == "overloaded_error":
        return Overloaded(detail)
    if kind == "rate_limit_error":
        return RateLimited(detail)
    return UpstreamError(detail)


def usage_in(usage: dict[str, Any], prompt: Usage | None = None) -> Usage:
    """Anthropic's usage object in our terms, where the prompt counts every input token, as
    OpenAI's does: Anthropic's `input_tokens` leaves out those read from the cache and those
    written to it. `prompt` is what message_start said, for a message_delta that leaves the
    input figures out (they are cumulative when given)."""
    output = as_int(usage.get("output_tokens"))
    if prompt is not None and usage.get("input_tokens") is None:
        return replace(prompt, completion_tokens=output)
    cache_read = usage.get("cache_read_input_tokens")
    cache_creation = usage.get("cache_creation_input_tokens")
    return Usage(
        as_int(usage.get("input_tokens")) + as_int(cache_read) + as_int(cache_creation),
        output,
        cached_tokens=cache_read if isinstance(cache_read, int) else None,
        cache_creation_tokens=cache_creation if isinstance(cache_creation, int) else None,
    )


def usage_out(usage: dict[str, Any]) -> dict[str, Any]:
    """Our usage object (or as much of it as is known) as Anthropic's: the reverse of
    `usage_in`."""
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    creation = usage.get("cache_creation_input_tokens")
    uncached = as_int(usage.get("prompt_tokens")) - as_int(cached) - as_int(creation)
    out: dict[str, Any] = {"input_tokens": max(uncached, 0)}
    if isinstance(creation, int):
        out["cache_creation_input_tokens"] = creation
    if isinstance(cached, int):
        out["cache_read_input_tokens"] = cached
    out["output_tokens"] = as_int(usage.get("completion_tokens"))
    return out


class EventDecoder:
    def __init__(self) -> None:
        self.finished = False
        self._prompt: Usage | None = None  # from message_start
        self._json_block: int | None = None  # our JSON tool's block (json_tool), if any
        self._tool_blocks: set[int] = set()  # the caller's tool_use blocks, by index
        self._refused = False  # stop_reason refusal: raised at message_stop (or the end)

    def feed_sse(self, event: ServerSentEvent) -> list[Delta]:
        try:
            payload = orjson.loads(event.data) if event.data else {}
        except orjson.JSONDecodeError:
            raise UpstreamError("anthropic: undecodable event") from None
        if not isinstance(payload, dict):
            raise UpstreamError("anthropic: event is not an object")
        kind = payload.get("type", event.event)
        if kind == "content_block_delta":
            return self._content_delta(payload)
        if kind == "content_block_start":
            return self._block_start(payload)
        if kind == "content_block_stop":
            index = payload.get("index")
            if index in self._tool_blocks:
                return [Delta(tool=ToolDelta(as_int(index), done=True))]
            return []
        if kind == "message_start":
            usage = (payload.get("message") or {}).get("usage") or {}
            self._prompt = usage_in(usage)
            return [Delta(usage=self._prompt)]
        if kind == "message_delta":
            return [self._message_delta(payload)]
        if kind == "message_stop":
            self.finished = True
            self._raise_if_refused()
            return []
        if kind == "error":
            raise error_from_body(payload.get("error"))
        return []  # ping, and event types added later

    def feed(self, event: str, data: str) -> list[Delta]:
        """One SSE event's name and data (as `feed_sse` takes them)."""
        return self.feed_sse(ServerSentEvent(data, event))

    def _block_start(self, payload: dict[str, Any]) -> list[Delta]:
        block = payload.get("content_block") or {}
        index = as_int(payload.get("index"))
        kind = block.get("type")
        if kind == "tool_use" and block.get("name") == JSON_TOOL:
            self._json_block = index
            return []
        if kind == "tool_use":
            self._tool_blocks.add(index)
            whole = block.get("input")
            arguments = orjson.dumps(whole).decode() if whole else ""  # a call given whole
            return [
                Delta(
                    tool=ToolDelta(
                        index, str(block.get("id", "")), str(block.get("name", "")), arguments
                    )
                )
            ]
        if kind == "redacted_thinking":
            return [Delta(redacted=str(block.get("data", "")))]
        if kind == "thinking" and block.get("thinking"):
            return [Delta(reasoning=str(block["thinking"]))]
        if kind == "text" and block.get("text"):
            return [Delta(str(block["text"]))]
        return []

    def _content_delta(self, payload: dict[str, Any]) -> list[Delta]:
        delta = payload.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            return [Delta(text)] if isinstance(text, str) and text else []
        if kind == "thinking_delta":
            thinking = delta.get("thinking")
            return [Delta(reasoning=thinking)] if isinstance(thinking, str) and thinking else []
        if kind == "signature_delta":
            signature = delta.get("signature")
            return [Delta(signature=signature)] if isinstance(signature, str) and signature else []
        if kind == "input_json_delta":
            piece = delta.get("partial_json")
            if not isinstance(piece, str) or not piece:
                return []
            index = payload.get("index")
            if index == self._json_block:
                return [Delta(piece)]  # the JSON answer (json_tool), as text
            return [Delta(tool=ToolDelta(as_int(index), arguments=piece))]
        return []

    def _message_delta(self, payload: dict[str, Any]) -> Delta:
        stop = (payload.get("delta") or {}).get("stop_reason")
        usage = usage_in(payload.get("usage") or {}, self._prompt)
        if stop == "refusal":  # as OpenAI's content_filter finish: the answer was stopped;
            self._refused = True  # raised at message_stop, after its count is taken
            return Delta(usage=usage)
        finish = STOP_TO_FINISH.get(stop, "stop") if isinstance(stop, str) else None
        if stop == "tool_use" and self._json_block is not None:
            finish = "stop"  # our own JSON tool: the answer is complete, not a tool call
        return Delta(finish_reason=finish, usage=usage)

    def finish(self) -> None:
        self._raise_if_refused()
        if not self.finished:
            raise NetworkError("anthropic: stream ended without message_stop")

    def _raise_if_refused(self) -> None:
        if self._refused:
            raise ContentFiltered("anthropic: stop_reason refusal")


# Events with no Anthropic form (a retry's status, JSON partials, log probabilities), and
# `start`: message_start waits for the upstream's count of the prompt, or the first content.
_NO_FORM = frozenset({"start", "status", "json", "logprobs"})


class EventEncoder(common.EventEncoder):
    """Renders one stream's events as Anthropic's event sequence. One instance per response."""

    def __init__(
        self, message_id: str, model: str, input_tokens: int, *, json_tool: bool = False
    ) -> None:
        self._message_id = message_id
        self._model = model
        self._usage: dict[str, Any] = {"prompt_tokens": input_tokens}  # estimated, until told
        self._json_tool = json_tool  # the text is our JSON tool's input (as Anthropic sends it)
        self._started = False  # message_start went out
        self._block = -1  # the open block's index, -1 for none
        self._kind = ""  # the open block's kind: text, thinking, tool_use, redacted_thinking
        # Anthropic's blocks follow one another; an OpenAI upstream's parallel calls
        # interleave. The call whose block is open streams; the others wait here, in order,
        # until it ends.
        self._open_call: int | None = None
        self._waiting: dict[int, list[dict[str, Any]]] = {}

    def encode_one(self, event: Event) -> bytes:
        kind = event.type
        if kind in _NO_FORM:  # nor do they start the message: it waits for the prompt's count
            return b""
        if kind == "usage":
            self._usage = event.payload()["usage"]
            return self._message_start()
        out = self._message_start()
        if kind == "token":
            return out + self._text(event.payload()["content"])
        if kind == "reasoning":
            return out + self._reasoning(event.payload())
        if kind == "tool_call":
            return out + self._tool_call(event.payload())
        if kind == "done":
            done = event.payload()
            stop = FINISH_TO_STOP.get(done["finish_reason"], "end_turn")
            if self._json_tool and stop == "end_turn":
                stop = "tool_use"
            return out + self._stop(stop, done)
        if kind == "error":
            error = event.payload()
            if error["error_type"] == "content_filter":
                return out + self._stop("refusal", error)
            return out + named_event("error", error_object(error["error_type"], error["message"]))
        if kind == "cancelled":
            return out + named_event(
                "error", error_object("cancelled", client_message("cancelled"))
            )
        return out

    def _message_start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        usage = {**self._usage, "completion_tokens": 1}  # Anthropic's message_start says 1
        message = message_object(self._message_id, self._model, [], None, usage)
        return named_event("message_start", {"type": "message_start", "message": message}) + (
            named_event("ping", {"type": "ping"})
        )

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        """Close the open block if it is of another kind, and open `block`."""
        out = self._close()
        self._block += 1
        self._kind = kind
        start = {"type": "content_block_start", "index": self._block, "content_block": block}
        return out + named_event("content_block_start", start)

    def _close(self) -> bytes:
        if not self._kind:
            return b""
        self._kind = ""
        stop = {"type": "content_block_stop", "index": self._block}
        return named_event("content_block_stop", stop)

    def _delta(self, delta: dict[str, Any]) -> bytes:
        body = {"type": "content_block_delta", "index": self._block, "delta": delta}
        return named_event("content_block_delta", body)

    def _text(self, text: str) -> bytes:
        out = b""
        if self._json_tool:
            if self._kind != "tool_use":
                block = {"type": "tool_use", "id": "toolu_json", "name": JSON_TOOL, "input": {}}
                out = self._open("tool_use", block)
            return out + self._delta({"type": "input_json_delta", "partial_json": text})
        if self._kind != "text":
            out = self._open("text", {"type": "text", "text": ""})
        return out + self._delta({"type": "text_delta", "text": text})

    def _reasoning(self, piece: dict[str, Any]) -> bytes:
        if piece.get("redacted"):
            block = {"type": "redacted_thinking", "data": piece["redacted"]}
            return self._open("redacted_thinking", block) + self._close()
        out = b""
        if self._kind != "thinking":
            # The signature is there from the start, empty, as Anthropic sends it: a block
            # whose upstream gave none (an OpenAI-compatible one) still has the field the
            # SDK echoes back in history.
            block = {"type": "thinking", "thinking": "", "signature": ""}
            out = self._open("thinking", block)
        if piece.get("content"):
            out += self._delta({"type": "thinking_delta", "thinking": piece["content"]})
        if piece.get("signature"):
            out += self._delta({"type": "signature_delta", "signature": piece["signature"]})
            out += self._close()
        return out

    def _tool_call(self, call: dict[str, Any]) -> bytes:
        index, phase = call["index"], call["phase"]
        busy = self._kind == "tool_use" and self._open_call != index
        if busy or index in self._waiting:
            self._waiting.setdefault(index, []).append(call)
            return b""
        if phase == "start":
            self._open_call = index
            block = {"type": "tool_use", "id": call["id"], "name": call["name"], "input": {}}
            return self._open("tool_use", block)
        if phase == "delta":
            return self._delta({"type": "input_json_delta", "partial_json": call["arguments"]})
        self._open_call = None
        return self._close() + self._next_waiting()

    def _next_waiting(self) -> bytes:
        """The first waiting call's block, as far as it has come (and the next's, if it ended)."""
        if not self._waiting:
            return b""
        index = next(iter(self._waiting))
        return b"".join(self._tool_call(call) for call in self._waiting.pop(index))

    def _stop(self, stop_reason: str, ending: dict[str, Any]) -> bytes:
        out = b""
        while self._waiting:  # calls cut short: what they had, each in its block
            self._open_call = None
            out += self._close() + self._next_waiting()
        out += self._close()
        if self._block < 0:  # nothing was said: an empty text block, as the API gives one
            out = self._open("text", {"type": "text", "text": ""}) + self._close()
        delta = {"stop_reason": stop_reason, "stop_sequence": None}
        # The ending's usage is the last word: cumulative, and it may correct message_start's
        # estimate of the prompt (an OpenAI upstream counts it only at the end).
        usage = ending.get("usage") or {}
        if not usage.get("completion_tokens"):
            usage = {**usage, "completion_tokens": as_int(ending.get("token_count"))}
        message_delta = {"type": "message_delta", "delta": delta, "usage": usage_out(usage)}
        return (
            out
            + named_event("message_delta", message_delta)
            + named_event("message_stop", {"type": "message_stop"})
        )


def message_object(
    message_id: str,
    model: str,
    content: list[dict[str, Any]],
    stop_reason: str | None,
    usage: dict[str, Any],
) -> dict[str, Any]:
    """The `message` object, for `message_start` and for non-streaming answers; `usage` is
    ours (see `usage_out`)."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage_out(usage),
    }


def content_blocks(answer: Answer) -> list[dict[str, Any]]:
    """A whole answer's content blocks: its reasoning, its text, its tool calls."""
    blocks: list[dict[str, Any]] = []
    for block in answer.reasoning:
        if block.redacted:
            blocks.append({"type": "redacted_thinking", "data": block.redacted})
        else:
            blocks.append(
                {"type": "thinking", "thinking": block.text, "signature": block.signature}
            )
    if answer.text or not answer.calls:
        blocks.append({"type": "text", "text": answer.text})
    for call in answer.calls:
        arguments = call.arguments if isinstance(call.arguments, dict) else {}
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": arguments})
    return blocks
