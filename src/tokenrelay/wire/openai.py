"""OpenAI Chat Completions streaming, both ways.

Upstream (tokenrelay as a client): `ChunkDecoder.feed_sse(event)` takes each SSE event and
returns Deltas. It handles the role-only first chunk, the usage chunk with empty `choices`
(with its cached and reasoning token details), `choices: null`, an in-band `{"error": ...}`
line (raised as a GenerationError), the finish reasons, and `[DONE]`. Reasoning comes as
`reasoning_content` (DeepSeek, vLLM until 0.9) or `reasoning` (vLLM since): both are read.
Tool calls come as `tool_calls` pieces by `index`; a piece with a new id at an index already
in use is a new call (some servers send parallel calls all at index 0), and a call may come
whole in one piece. `finish()` raises NetworkError if the stream was cut before `[DONE]`.

Downstream (tokenrelay as a server): `ChunkEncoder` renders our events as the chunks OpenAI
sends: no SSE ids, `data: [DONE]` after success. Reasoning goes out as `reasoning_content`,
tool calls as `tool_calls` pieces. An error becomes the in-band error line the official SDK
raises on, with no `[DONE]`. One deliberate mapping: our `content_filter` error is sent the way
OpenAI itself reports it, as `finish_reason: "content_filter"` and then `[DONE]`. With
`include_usage`, every ending carries the usage chunk, an error's included (before its line).

Requests, both ways, are in `openai_request.py`.
"""

from __future__ import annotations

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
from tokenrelay.events import Event, token_content_json
from tokenrelay.providers.base import Delta, ToolDelta, Usage
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
    "upstream_rejected": "invalid_request_error",
    "unauthorized": "invalid_request_error",  # with code unauthorized; the SDK reads the 401
    "model_not_allowed": "invalid_request_error",
    "key_limit": "rate_limit_exceeded",
    "timeout": "timeout",
    "cancelled": "cancelled",
}


def error_object(error_type: str, message: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object for one of our error types (`code` keeps ours)."""
    kind = ERROR_TYPES.get(error_type, "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": error_type}}


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
        self._calls: dict[int, tuple[str, int]] = {}  # upstream index -> (call id, position)
        self._positions = 0  # calls begun
        # A content filter stopped the answer: raised at [DONE] (or the end), so the usage
        # chunk between them still counts what was said.
        self._filtered = False

    def feed_sse(self, event: ServerSentEvent) -> list[Delta]:
        data = event.data
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            if data.strip() == "[DONE]":  # not JSON: checked only when the parse fails
                self.finished = True
                self._raise_if_filtered()
                return []
            raise UpstreamError("openai: undecodable chunk") from None
        # Once per token, so the usual chunk is checked in one go: its first choice's delta
        # holds a text and nothing else, with no finish, usage or error beside it. Anything
        # else (a role, reasoning, tool calls, logprobs, a finish, usage) takes the general
        # path below.
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
                and choice.get("logprobs") is None
                and chunk.get("usage") is None
                and chunk.get("error") is None
            ):
                return [_new(Delta, (text, None, None, "", "", "", None, None))]
        return self._general(chunk)

    def feed(self, data: str) -> list[Delta]:
        """One SSE `data` string (as `feed_sse` takes it from an event)."""
        return self.feed_sse(ServerSentEvent(data))

    def _general(self, chunk: Any) -> list[Delta]:
        if not isinstance(chunk, dict):
            raise UpstreamError("openai: chunk is not an object")
        if chunk.get("error") is not None:
            raise error_from_body(chunk["error"])
        deltas: list[Delta] = []
        choices = chunk.get("choices")
        if choices and isinstance(choices, list) and isinstance(choices[0], dict):
            deltas += self._choice(choices[0])
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            deltas.append(Delta(usage=usage_in(usage)))
        return deltas

    def _choice(self, choice: dict[str, Any]) -> list[Delta]:
        """The first choice's reasoning, text, tool-call pieces and finish, in that order."""
        delta = choice.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        deltas = []
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            deltas.append(Delta(reasoning=reasoning))
        text = delta.get("content")
        logprobs = choice.get("logprobs")
        scored = logprobs.get("content") if isinstance(logprobs, dict) else None
        scored = scored if isinstance(scored, list) and scored else None
        if isinstance(text, str) and text:
            deltas.append(Delta(text, logprobs=scored))
        elif scored:  # in a chunk of their own, as tokenrelay's own /v1 sends them
            deltas.append(Delta(logprobs=scored))
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            if isinstance(call, dict):
                deltas.append(Delta(tool=self._tool_piece(call)))
        finish = choice.get("finish_reason")
        if finish == "content_filter":
            self._filtered = True
            return deltas
        if isinstance(finish, str) and finish:
            deltas.append(Delta(finish_reason=_FINISH.get(finish, finish)))
        return deltas

    def _tool_piece(self, call: dict[str, Any]) -> ToolDelta:
        index = _int(call.get("index"))
        call_id = _str(call.get("id"))
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        arguments = _str(function.get("arguments"))
        known = self._calls.get(index)
        if known is None or (call_id and call_id != known[0]):  # a new call, even at index 0
            position = self._positions
            self._calls[index] = (call_id, position)
            self._positions += 1
            return ToolDelta(position, call_id, _str(function.get("name")), arguments)
        return ToolDelta(known[1], arguments=arguments)

    def finish(self) -> None:
        self._raise_if_filtered()
        if not self.finished:
            raise NetworkError("openai: stream ended without [DONE]")

    def _raise_if_filtered(self) -> None:
        if self._filtered:
            raise ContentFiltered("openai: finish_reason content_filter")


_FINISH = {"function_call": "tool_calls"}  # the legacy name


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_in(usage: dict[str, Any]) -> Usage:
    """OpenAI's usage object, with its details where given."""
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    cached = prompt_details.get("cached_tokens") if isinstance(prompt_details, dict) else None
    reasoning = (
        completion_details.get("reasoning_tokens") if isinstance(completion_details, dict) else None
    )
    return Usage(
        as_int(usage.get("prompt_tokens")),
        as_int(usage.get("completion_tokens")),
        cached_tokens=cached if isinstance(cached, int) else None,
        reasoning_tokens=reasoning if isinstance(reasoning, int) else None,
    )


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
        self._thinking: list[str] = []  # the reasoning block being streamed
        self._blocks = 0  # thinking blocks sent whole (thinking_blocks)

    def _chunk(
        self, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None
    ) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return data_line({**self._base, "choices": [choice]})

    def encode_one(self, event: Event) -> bytes:
        if event.type == "token":
            content = token_content_json(event)
            if content is not None:
                return self._token_head + content + self._token_tail
            return self._chunk({"content": event.payload()["content"]})
        if event.type == "reasoning":
            return self._reasoning(event.payload())
        if event.type == "tool_call":
            return self._tool_call(event.payload())
        if event.type == "logprobs":  # the scores of the text just sent, in a chunk of their own
            scores = {"content": event.payload()["content"], "refusal": None}
            return self._chunk({}, logprobs=scores)
        if event.type == "start":
            return self._chunk({"role": "assistant", "content": ""})
        if event.type in ("done", "error", "cancelled"):
            return self._ending(event.type, event.payload())
        return b""  # status, json and early usage events have no OpenAI form

    def _reasoning(self, piece: dict[str, Any]) -> bytes:
        """Reasoning streams as `reasoning_content`; a block Anthropic signed (or redacted)
        then goes whole into `thinking_blocks`, a field of LiteLLM's making that OpenAI has
        none for: the client sends it back in the assistant turn, so that an Anthropic
        upstream gets its signature back and multi-turn tool use with thinking works."""
        content = piece["content"]
        out = self._chunk({"reasoning_content": content}) if content else b""
        self._thinking.append(content)
        block = thinking_block(
            "".join(self._thinking), piece.get("signature", ""), piece.get("redacted", "")
        )
        if block is not None:
            self._thinking = []
            entry = {"index": self._blocks, **block}
            self._blocks += 1
            out += self._chunk({"thinking_blocks": [entry]})
        return out

    def _tool_call(self, call: dict[str, Any]) -> bytes:
        if call["phase"] == "start":
            function = {"name": call["name"], "arguments": ""}
            piece = {"index": call["index"], "id": call["id"], "type": "function"}
            return self._chunk({"tool_calls": [{**piece, "function": function}]})
        if call["phase"] == "delta":
            function = {"arguments": call["arguments"]}
            return self._chunk({"tool_calls": [{"index": call["index"], "function": function}]})
        return b""  # the end: OpenAI's calls end with the answer

    def _ending(self, kind: str, ending: dict[str, Any]) -> bytes:
        usage = b""
        if self._include_usage and ending.get("usage"):
            usage = data_line({**self._base, "choices": [], "usage": ending["usage"]})
        if kind == "done":
            return self._chunk({}, ending["finish_reason"]) + usage + DONE_LINE
        if kind == "error" and ending["error_type"] == "content_filter":
            return self._chunk({}, "content_filter") + usage + DONE_LINE
        error_type = ending["error_type"] if kind == "error" else "cancelled"
        return usage + data_line(error_object(error_type, client_message(error_type)))


def completion(
    completion_id: str, model: str, created: int, answer: Answer, finish: str
) -> dict[str, Any]:
    """The non-streaming `chat.completion` object."""
    message: dict[str, Any] = {"role": "assistant", "content": answer.text, "refusal": None}
    if answer.calls:
        message["content"] = answer.text or None
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_text},
            }
            for call in answer.calls
        ]
    reasoning = "".join(block.text for block in answer.reasoning)
    if reasoning:
        message["reasoning_content"] = reasoning
    blocks = [
        entry
        for block in answer.reasoning
        if (entry := thinking_block(block.text, block.signature, block.redacted))
    ]
    if blocks:
        message["thinking_blocks"] = blocks
    usage = answer.ending.get("usage")
    logprobs = {"content": answer.logprobs, "refusal": None} if answer.logprobs else None
    choice = {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish}
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def thinking_block(text: str, signature: str, redacted: str) -> dict[str, Any] | None:
    """A `thinking_blocks` entry (see ChunkEncoder._reasoning): a signed or redacted block;
    None for reasoning with no signature (OpenAI-compatible servers sign nothing)."""
    if redacted:
        return {"type": "redacted_thinking", "data": redacted}
    if signature:
        return {"type": "thinking", "thinking": text, "signature": signature}
    return None
