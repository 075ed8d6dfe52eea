"""The native API: /api/chat/stream (POST and GET), /api/chat, /api/streams/{id}, /api/models."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tokenrelay.answer import Answer, native_call, native_reasoning
from tokenrelay.auth.tokens import TOKEN_SECONDS
from tokenrelay.errors import InvalidEventId
from tokenrelay.metrics import METRICS
from tokenrelay.server.auth import key_of, owner_of, visible_models
from tokenrelay.server.chat_request import (
    ChatRequest,
    query_to_data,
    read_json_body,
    validate_chat,
)
from tokenrelay.server.collect import collect_answer
from tokenrelay.server.compat_request import NATIVE_NAMES
from tokenrelay.server.dialects import NATIVE, retry_after_header
from tokenrelay.server.generation import start_generation
from tokenrelay.server.lifecycle import server_pid
from tokenrelay.server.middleware import note_stream
from tokenrelay.server.origins import refuse_cross_site_start
from tokenrelay.server.responses import EventStreamResponse
from tokenrelay.server.resume import authorize, last_event_id, resume_point
from tokenrelay.server.state import AppState, request_id_of


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.tokenrelay
    return state


async def _start(request: Request, chat: ChatRequest) -> tuple[str, str]:
    """Start a generation; return its stream id and canonical model name."""
    state = _state(request)
    provider, model, canonical = state.registry.resolve(chat.model or state.default_model)
    generation = chat.to_generation(model, request_id_of(request))
    streams = state.settings.streams
    mode = chat.on_upstream_error or streams.on_upstream_error
    stream_id = await start_generation(
        request,
        state,
        provider,
        generation,
        canonical,
        NATIVE_NAMES,
        on_disconnect=chat.on_disconnect,
        continue_on_error=mode == "continue",
        shaping=chat.shaping(streams.chunking, streams.max_hold_ms),
        include_reasoning=chat.include_reasoning,
        validate_tool_arguments=chat.validate_tool_arguments,
    )
    return stream_id, canonical


async def chat_stream_post(request: Request) -> Response:
    state = _state(request)
    data = await read_json_body(request, state.settings.server.max_body_bytes)
    chat = validate_chat(data, strict=True, max_tokens_limit=state.settings.server.max_tokens_limit)
    stream_id, _ = await _start(request, chat)
    return EventStreamResponse(state.manager, stream_id, request_id=request_id_of(request))


async def chat_stream_get(request: Request) -> Response:
    """The EventSource variant. With a Last-Event-ID it resumes instead of starting anew, so
    EventSource's own reconnection is a true resume."""
    state = _state(request)
    resume = last_event_id(request)
    if resume is not None:
        return await _resume(request, *resume)
    refuse_cross_site_start(request, state.settings.server.cors_origins)
    data = query_to_data(request.query_params.multi_items())
    chat = validate_chat(
        data, strict=False, max_tokens_limit=state.settings.server.max_tokens_limit
    )
    stream_id, _ = await _start(request, chat)
    return EventStreamResponse(state.manager, stream_id, request_id=request_id_of(request))


async def _resume(request: Request, stream_id: str, after: int) -> Response:
    state = _state(request)
    cursor = await resume_point(state.manager.log, stream_id, after, owner_of(request))
    note_stream(request.scope, stream_id)
    if cursor is None:
        return Response(status_code=204, headers={"x-stream-id": stream_id})
    METRICS.resumes += 1
    return EventStreamResponse(
        state.manager, stream_id, after=cursor, request_id=request_id_of(request)
    )


async def chat_complete(request: Request) -> Response:
    """The non-streaming fallback: the same stream machinery, collected into one answer."""
    state = _state(request)
    data = await read_json_body(request, state.settings.server.max_body_bytes)
    chat = validate_chat(data, strict=True, max_tokens_limit=state.settings.server.max_tokens_limit)
    stream_id, model = await _start(request, chat)
    answer = await collect_answer(state.manager, stream_id, request.receive)
    if answer is None:
        return Response(status_code=499)  # the client is gone; nobody reads this
    return _completion_response(request_id_of(request), stream_id, model, answer)


def _completion_response(request_id: str, stream_id: str, model: str, answer: Answer) -> Response:
    headers = {"x-stream-id": stream_id}
    ending = answer.ending
    if ending.get("type") == "done":
        meta = {k: ending[k] for k in ("token_count", "elapsed_seconds", "ttft_ms")}
        body: dict[str, Any] = {
            "id": stream_id,
            "content": answer.text,
            "model": model,
            "finish_reason": ending["finish_reason"],
            "usage": ending["usage"],
            **meta,
        }
        if answer.calls:
            body["tool_calls"] = [native_call(call) for call in answer.calls]
        if answer.reasoning:
            body["reasoning"] = [native_reasoning(block) for block in answer.reasoning]
        if answer.logprobs:
            body["logprobs"] = answer.logprobs
        if "parsed" in ending:  # JSON was asked for: the whole value, validated
            body["parsed"] = ending["parsed"]
        return JSONResponse(body, headers=headers)
    if ending.get("type") == "error":
        error_type = ending["error_type"]
        headers |= retry_after_header(ending.get("retry_after"))
        return NATIVE.error_response(
            error_type, request_id, headers=headers, retryable=ending["retryable"]
        )
    return NATIVE.error_response("cancelled", request_id, headers=headers)


async def cancel_stream(request: Request) -> Response:
    state = _state(request)
    stream_id = request.path_params["stream_id"]
    meta = await state.manager.log.meta(stream_id)
    if meta is not None:
        authorize(meta, owner_of(request))
    cancelled = await state.manager.cancel(stream_id)
    return JSONResponse(
        {"id": stream_id, "cancelled": cancelled}, status_code=202 if cancelled else 200
    )


async def attach_stream(request: Request) -> Response:
    """Attach to a stream: from its start, or after the Last-Event-ID the client has."""
    stream_id = request.path_params["stream_id"]
    resume = last_event_id(request)
    if resume is not None and resume[0] != stream_id:
        raise InvalidEventId()
    return await _resume(request, stream_id, resume[1] if resume else 0)


async def stream_token(request: Request) -> Response:
    """A token for EventSource, bound to the caller's key (`auth/tokens.py`); none is needed
    (null) while the server takes requests without keys."""
    state = _state(request)
    key = key_of(request)
    if key is None:
        return JSONResponse({"token": None, "expires_in": None})
    token = await state.tokens.issue(key.digest)
    return JSONResponse(
        {"token": token, "expires_in": TOKEN_SECONDS}, headers={"cache-control": "no-store"}
    )


async def usage(request: Request) -> Response:
    """The caller's own usage over the last 24 hours, by model. Usage is booked to keys:
    without them, this is empty (Prometheus has the server's totals)."""
    state = _state(request)
    by_model = await state.manager.usage.last_day(owner_of(request))
    return JSONResponse({"key": owner_of(request) or None, "hours": 24, "models": by_model})


async def list_models(request: Request) -> Response:
    state = _state(request)
    names = visible_models(request, state.registry.known_models())
    default = state.default_model if state.default_model in names or not names else names[0]
    return JSONResponse({"default": default, "models": [{"id": name} for name in names]})


async def healthz(request: Request) -> Response:
    """Ready (200) or not (503): draining for shutdown, or the stream store unreachable. With
    the server's pid, for tools on the same machine that watch it (`tokenrelay bench`)."""
    state = _state(request)
    store_ready = await state.manager.log.ready()
    status = "draining" if state.manager.draining else "ok" if store_ready else "unavailable"
    body = {
        "status": status,
        "active_streams": state.manager.active_count,
        "store": "ok" if store_ready else "unreachable",
        "pid": server_pid(),
    }
    return JSONResponse(body, status_code=200 if status == "ok" else 503)


ROUTES = [
    Route("/api/chat/stream", chat_stream_post, methods=["POST"]),
    Route("/api/chat/stream", chat_stream_get, methods=["GET"]),
    Route("/api/chat", chat_complete, methods=["POST"]),
    Route("/api/streams/{stream_id}", attach_stream, methods=["GET"]),
    Route("/api/streams/{stream_id}", cancel_stream, methods=["DELETE"]),
    Route("/api/models", list_models, methods=["GET"]),
    Route("/api/stream-tokens", stream_token, methods=["POST"]),
    Route("/api/usage", usage, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
]
