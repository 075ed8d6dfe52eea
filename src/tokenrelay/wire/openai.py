"""OpenAI Chat Completions streaming, both ways.

Upstream (tokenrelay as a client): `ChunkDecoder.feed_sse(event)` takes each SSE event and
returns Deltas. It handles the role-only first chunk, the usage chunk with empty `choices`,
`choices: null`, an in-band `{"error": ...}` line (raised as a GenerationError), the finish
reasons, and `[DONE]`. `finish()` raises NetworkError if the stream was cut before `[DONE]`.

Downstream (tokenrelay as a server): `ChunkEncoder` renders our events as the chunks OpenAI
sends: no SSE ids, `data: [DONE]` after success. An error becomes the in-band error line the
official SDK raises on, with no `[DONE]`. One deliberate mapping: our `content_filter` error is
sent the way OpenAI itself reports it, as `finish_reason: "content_filter"` and then `[DONE]`.
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
from tokenrelay.events import Event, token_content_json
from tokenrelay.providers.base import Delta, GenerationRequest, Usage
from tokenrelay.sse import ServerSentEvent
from tokenrelay.wire.common import EventEncoder, as_int, data_line, safe_label

DONE_LINE = b"data: [DONE]\n\n"
_new = tuple.__new__  # a Delta built without its Python-level constructor (events.py)

# Our error types as OpenAI's error `type` values, for the errors we send in this dialect.
ERROR_TYPES = {
    "invalid_json": "invalid_request_error",
    "invalid_request": "invalid_request_error",
    "unsupported_media_type": "invalid_request_error",
    "unknown_model": "invalid_request_error",
    "payload_too_large": "invalid_request_error",
    "not_found": "invalid_request_error",
    "method_not_allowed": "invalid_request_error",
    "rate_limit": "rate_limit_exceeded",
    "overloaded": "server_error",
    "api_error": "server_error",
    "timeout": "timeout",
    "cancelled": "cancelled",
}


def error_object(error_type: str, message: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object for one of our error types (`code` keeps ours)."""
    kind = ERROR_TYPES.get(error_type, "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": error_type}}


def request_body(request: GenerationRequest, model: str, *, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.response_format is not None:
        body["response_format"] = request.response_format
    return body


def error_from_body(error: Any) -> GenerationError:
    """Map an upstream `{"error": {...}}` object; the message is dropped, never logged."""
    error = error if isinstance(error, dict) else {}
    kind, code = safe_label(error.get("type")), safe_label(error.get("code"))
    detail = f"openai error type={kind} code={code}"
    if "rate_limit" in kind or "rate_limit" in code:
        return RateLimited(detail)
    if "overloaded" in kind or "overloaded" in code:
        return Overloaded(detail)
    return UpstreamError(detail)


class ChunkDecoder:
    def __init__(self) -> None:
        self.finished = False  # [DONE] seen
        self._finish_reason: str | None = None

    def feed_sse(self, event: ServerSentEvent) -> list[Delta]:
        data = event.data
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            if data.strip() == "[DONE]":  # not JSON: checked only when the parse fails
                self.finished = True
                return []
            raise UpstreamError("openai: undecodable chunk") from None
        # Once per token, so the usual chunk is checked in one go: its first choice's delta
        # holds a text and nothing else, with no finish, usage or error beside it. Anything
        # else (a role, a finish, usage, fields added later) takes the general path below.
        try:
            choice = chunk["choices"][0]
            delta = choice["delta"]
            text = delta["content"]
        except (KeyError, IndexError, TypeError):
            pass
        else:
            if (
                type(text) is str
                and text
                and len(delta) == 1
                and choice.get("finish_reason") is None
                and chunk.get("usage") is None
                and chunk.get("error") is None
            ):
                return [_new(Delta, (text, None, None))]
        return self._general(chunk)

    def feed(self, data: str) -> list[Delta]:
        """One SSE `data` string (as `feed_sse` takes it from an event)."""
        return self.feed_sse(ServerSentEvent(data))

    def _general(self, chunk: Any) -> list[Delta]:
        if not isinstance(chunk, dict):
            raise UpstreamError("openai: chunk is not an object")
        if chunk.get("error") is not None:
            raise error_from_body(chunk["error"])
        deltas = []
        choices = chunk.get("choices")
        if choices and isinstance(choices, list):
            delta = self._choice_delta(choices[0])
            if delta is not None:
                deltas.append(delta)
        usage = chunk.get("usage")
        if usage is not None and isinstance(usage, dict):
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
            deltas.append(Delta(usage=Usage(as_int(prompt), as_int(completion))))
        return deltas

    def _choice_delta(self, choice: Any) -> Delta | None:
        """The first choice's text and finish reason; None if it has neither."""
        if not isinstance(choice, dict):
            return None
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else None
        if not isinstance(text, str):
            text = ""
        finish = choice.get("finish_reason")
        if finish is not None:
            if finish == "content_filter":
                raise ContentFiltered("openai: finish_reason content_filter")
            if isinstance(finish, str):
                self._finish_reason = finish
            else:
                finish = None
        if not text and finish is None:
            return None
        return Delta(text, finish)

    def finish(self) -> None:
        if not self.finished:
            raise NetworkError("openai: stream ended without [DONE]")


class ChunkEncoder(EventEncoder):
    """Renders one stream's events as OpenAI chunks. One instance per response."""

    def __init__(self, completion_id: str, model: str, created: int, include_usage: bool) -> None:
        self._base = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        self._include_usage = include_usage
        # A token's chunk is this head, the content's JSON string, and this tail: built once, so
        # a token is two concatenations (the content is taken from the event's payload as is).
        marker = "tokenrelay-content"
        head, _, tail = self._chunk({"content": marker}).rpartition(orjson.dumps(marker))
        self._token_head, self._token_tail = head, tail

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return data_line({**self._base, "choices": [choice]})

    def encode_one(self, event: Event) -> bytes:
        if event.type == "token":
            content = token_content_json(event)
            if content is not None:
                return self._token_head + content + self._token_tail
            return self._chunk({"content": event.payload()["content"]})
        if event.type == "start":
            return self._chunk({"role": "assistant", "content": ""})
        if event.type == "done":
            return self._done(event.payload())
        if event.type == "error":
            return self._error(event.payload())
        if event.type == "cancelled":
            return data_line(error_object("cancelled", client_message("cancelled")))
        return b""  # status and json events have no OpenAI form

    def _done(self, done: dict[str, Any]) -> bytes:
        out = self._chunk({}, done["finish_reason"])
        if self._include_usage and done.get("usage"):
            out += data_line({**self._base, "choices": [], "usage": done["usage"]})
        return out + DONE_LINE

    def _error(self, error: dict[str, Any]) -> bytes:
        if error["error_type"] == "content_filter":
            return self._chunk({}, "content_filter") + DONE_LINE
        return data_line(error_object(error["error_type"], error["message"]))


def completion(
    completion_id: str,
    model: str,
    created: int,
    content: str,
    finish: str,
    usage: dict[str, int] | None,
) -> dict[str, Any]:
    """The non-streaming `chat.completion` object."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
