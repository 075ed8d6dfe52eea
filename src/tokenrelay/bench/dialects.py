"""The two APIs the load tester speaks: tokenrelay's native SSE and OpenAI chat completions.

Each dialect builds a request body and reads one SSE event into a `Reading`: a token's text, a
stream id, or an ending. Nothing else about the wire matters to the load tester.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from tokenrelay.sse import ServerSentEvent

Api = Literal["native", "openai"]
Kind = Literal["token", "start", "done", "error", "other"]


@dataclass(frozen=True, slots=True)
class Reading:
    kind: Kind
    value: str = ""  # token text, stream id, or error type


OTHER = Reading("other")


def request(
    api: Api, model: str, prompt: str, max_tokens: int, *, detach: bool = False
) -> tuple[str, bytes]:
    """The path and JSON body that start one streamed answer."""
    if api == "native":
        body: dict[str, Any] = {"message": prompt, "model": model, "max_tokens": max_tokens}
        if detach:  # dropped connections are to be resumed, so generation must wait for them
            body["on_disconnect"] = "detach"
        return "/api/chat/stream", orjson.dumps(body)
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return "/v1/chat/completions", orjson.dumps(body)


def read(api: Api, event: ServerSentEvent) -> Reading:
    if api == "openai" and event.data == "[DONE]":
        return Reading("done")
    try:
        payload = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        return Reading("error", "malformed_event")
    if not isinstance(payload, dict):
        return Reading("error", "malformed_event")
    return _native(payload) if api == "native" else _openai(payload)


def _native(payload: dict[str, Any]) -> Reading:
    kind = payload.get("type")
    if kind == "token":
        return Reading("token", str(payload.get("content", "")))
    if kind == "start":
        return Reading("start", str(payload.get("stream_id", "")))
    if kind == "done":
        return Reading("done")
    if kind == "error":
        return Reading("error", str(payload.get("error_type", "error")))
    if kind == "cancelled":
        return Reading("error", "cancelled")
    return OTHER


def _openai(payload: dict[str, Any]) -> Reading:
    if "error" in payload:
        error = payload["error"]
        kind = error.get("type") if isinstance(error, dict) else None
        return Reading("error", str(kind or "error"))
    choices = payload.get("choices") or []
    if choices and isinstance(choices[0], dict):
        content = (choices[0].get("delta") or {}).get("content")
        if content:
            return Reading("token", str(content))
    return OTHER


def error_type_of(status: int, body: bytes) -> str:
    """`http_<status>` plus the error body's type, when it has one (both APIs nest it)."""
    try:
        error = orjson.loads(body).get("error")
        kind = error.get("type") if isinstance(error, dict) else None
    except (orjson.JSONDecodeError, AttributeError):
        kind = None
    return f"http_{status}" + (f":{kind}" if isinstance(kind, str) and kind.isidentifier() else "")
