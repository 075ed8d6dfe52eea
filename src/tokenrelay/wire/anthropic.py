"""Anthropic Messages streaming, both ways.

Upstream: `EventDecoder.feed(event, data)` takes each SSE event (Anthropic names every event)
and returns Deltas: text from `content_block_delta`/`text_delta`, input tokens from
`message_start`, `stop_reason` and output tokens from `message_delta`. `ping` is ignored, an
in-band `error` event (such as `overloaded_error` after HTTP 200) is raised as a
GenerationError, and `finish()` raises NetworkError if the stream was cut before `message_stop`.

Downstream: `EventEncoder` renders our events as Anthropic's sequence (`message_start`,
`content_block_start`, `ping`, `content_block_delta`..., `content_block_stop`, `message_delta`,
`message_stop`), so the official SDK's `messages.stream()`, `text_stream` and
`get_final_message()` work. Failures become the in-band `error` event; our `content_filter`
becomes `stop_reason: "refusal"`, as Anthropic reports a refusal.
"""

from __future__ import annotations

from typing import Any

import orjson

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
from tokenrelay.providers.base import Delta, GenerationRequest, Usage
from tokenrelay.sse import ServerSentEvent
from tokenrelay.wire import common
from tokenrelay.wire.common import as_int, named_event, safe_label

DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; used when the caller gave none
JSON_TOOL = "json_answer"  # the forced tool that carries a JSON answer (json_tool)

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
    "rate_limit": "rate_limit_error",
    "overloaded": "overloaded_error",
    "timeout": "timeout_error",
}


def error_object(error_type: str, message: str, param: str | None = None) -> dict[str, Any]:
    """Anthropic's error object for one of our error types (it has no `param`)."""
    kind = ERROR_TYPES.get(error_type, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def request_body(request: GenerationRequest, model: str, *, stream: bool) -> dict[str, Any]:
    system = "\n\n".join(m.content for m in request.messages if m.role == "system")
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": m.role, "content": m.content} for m in request.messages if m.role != "system"
        ],
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        "stream": stream,
    }
    if system:
        body["system"] = system  # Anthropic takes the system prompt at the top level
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, 1.0)  # Anthropic's range is 0..1
    if request.response_format is not None:
        body.update(json_tool(request.response_format))
    return body


def json_tool(response_format: dict[str, Any]) -> dict[str, Any]:
    """JSON from Anthropic: one tool whose input schema is the requested schema, forced.

    The Messages API has no `response_format`; its documented way to get JSON that follows a
    schema is tool use with `tool_choice` naming the tool. The tool's input then streams as
    `input_json_delta` events, which the decoder relays as the answer's text.
    """
    spec = response_format.get("json_schema") or {}
    schema = spec.get("schema") if isinstance(spec.get("schema"), dict) else {"type": "object"}
    tool = {
        "name": JSON_TOOL,
        "description": spec.get("description") or "Give the answer as this JSON value.",
        "input_schema": schema,
    }
    return {"tools": [tool], "tool_choice": {"type": "tool", "name": JSON_TOOL}}


def forced_json_tool(body: dict[str, Any]) -> bool:
    """Whether a Messages request body forces our JSON tool (see json_tool)."""
    choice = body.get("tool_choice")
    return isinstance(choice, dict) and choice.get("name") == JSON_TOOL


def error_from_body(error: Any) -> GenerationError:
    error = error if isinstance(error, dict) else {}
    kind = safe_label(error.get("type"))
    detail = f"anthropic error type={kind}"
    if kind == "overloaded_error":
        return Overloaded(detail)
    if kind == "rate_limit_error":
        return RateLimited(detail)
    return UpstreamError(detail)


class EventDecoder:
    def __init__(self) -> None:
        self.finished = False
        self._input_tokens = 0
        self._json_block: int | None = None  # index of our JSON tool's block, if one started

    def feed(self, event: str, data: str) -> list[Delta]:
        try:
            payload = orjson.loads(data) if data else {}
        except orjson.JSONDecodeError:
            raise UpstreamError("anthropic: undecodable event") from None
        kind = payload.get("type", event) if isinstance(payload, dict) else event
        if kind == "content_block_delta":
            return self._content_delta(payload)
        if kind == "content_block_start":
            block = payload.get("content_block") or {}
            if block.get("type") == "tool_use" and block.get("name") == JSON_TOOL:
                self._json_block = payload.get("index")
            return []
        if kind == "message_start":
            usage = (payload.get("message") or {}).get("usage") or {}
            self._input_tokens = as_int(usage.get("input_tokens"))
            return []
        if kind == "message_delta":
            return [self._message_delta(payload)]
        if kind == "message_stop":
            self.finished = True
            return []
        if kind == "error":
            raise error_from_body(payload.get("error"))
        return []  # ping, content_block_start/stop, and event types added later

    def _content_delta(self, payload: dict[str, Any]) -> list[Delta]:
        delta = payload.get("delta") or {}
        if delta.get("type") == "text_delta":
            text = delta.get("text")
        elif delta.get("type") == "input_json_delta" and payload.get("index") == self._json_block:
            text = delta.get("partial_json")  # the JSON answer (json_tool), as it streams
        else:
            text = None
        return [Delta(text=text)] if isinstance(text, str) and text else []

    def _message_delta(self, payload: dict[str, Any]) -> Delta:
        stop = (payload.get("delta") or {}).get("stop_reason")
        if stop == "refusal":  # as OpenAI's content_filter finish: the answer was stopped
            raise ContentFiltered("anthropic: stop_reason refusal")
        usage = payload.get("usage") or {}
        finish = STOP_TO_FINISH.get(stop, "stop") if isinstance(stop, str) else None
        if stop == "tool_use" and self._json_block is not None:
            finish = "stop"  # our own JSON tool: the answer is complete, not a tool call
        return Delta(
            finish_reason=finish,
            usage=Usage(self._input_tokens, as_int(usage.get("output_tokens"))),
        )

    def feed_sse(self, event: ServerSentEvent) -> list[Delta]:
        return self.feed(event.event, event.data)

    def finish(self) -> None:
        if not self.finished:
            raise NetworkError("anthropic: stream ended without message_stop")


class EventEncoder(common.EventEncoder):
    """Renders one stream's events as Anthropic's event sequence. One instance per response."""

    def __init__(
        self, message_id: str, model: str, input_tokens: int, *, json_tool: bool = False
    ) -> None:
        self._message_id = message_id
        self._model = model
        self._input_tokens = input_tokens
        self._json_tool = json_tool  # the text is our JSON tool's input (as Anthropic sends it)

    def encode_one(self, event: Event) -> bytes:
        if event.type == "token":
            text = event.payload()["content"]
            delta = (
                {"type": "input_json_delta", "partial_json": text}
                if self._json_tool
                else {"type": "text_delta", "text": text}
            )
            return named_event(
                "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
            )
        if event.type == "start":
            return self._start()
        if event.type == "done":
            done = event.payload()
            usage = done.get("usage") or {}
            stop = FINISH_TO_STOP.get(done["finish_reason"], "end_turn")
            return self._stop(
                "tool_use" if self._json_tool and stop == "end_turn" else stop,
                as_int(usage.get("completion_tokens")) or done["token_count"],
            )
        if event.type == "error":
            error = event.payload()
            if error["error_type"] == "content_filter":
                return self._stop("refusal", 0)
            return named_event("error", error_object(error["error_type"], error["message"]))
        if event.type == "cancelled":
            return named_event("error", error_object("cancelled", client_message("cancelled")))
        return b""

    def _start(self) -> bytes:
        message = message_object(self._message_id, self._model, [], None, self._input_tokens, 1)
        return (
            named_event("message_start", {"type": "message_start", "message": message})
            + named_event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": (
                        {"type": "tool_use", "id": "toolu_mock", "name": JSON_TOOL, "input": {}}
                        if self._json_tool
                        else {"type": "text", "text": ""}
                    ),
                },
            )
            + named_event("ping", {"type": "ping"})
        )

    def _stop(self, stop_reason: str, output_tokens: int) -> bytes:
        return (
            named_event("content_block_stop", {"type": "content_block_stop", "index": 0})
            + named_event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": output_tokens},
                },
            )
            + named_event("message_stop", {"type": "message_stop"})
        )


def message_object(
    message_id: str,
    model: str,
    content: list[dict[str, Any]],
    stop_reason: str | None,
    input_tokens: int,
    output_tokens: int,
) -> dict[str, Any]:
    """The `message` object, for `message_start` and for non-streaming answers."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }
