"""OpenAI- and Anthropic-compatible endpoints, so the official SDKs work against tokenrelay.

    POST /v1/chat/completions   (stream and not)    GET /v1/models
    POST /v1/messages           (stream and not)

The `model` is a tokenrelay model name (`sim/fast`, `openai/gpt-4o`, an alias). Generation runs
through the same Stream machinery as the native API (cancel on disconnect, retries, commit
deadline); only the encoding differs. Errors use each dialect's own error object and status
(invalid input is 400 there, as OpenAI and Anthropic answer it), and a failure mid-stream is
the dialect's in-band error, never a clean-looking end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tokenrelay.answer import Answer
from tokenrelay.providers.base import GenerationRequest
from tokenrelay.server.auth import visible_models
from tokenrelay.server.chat_request import read_json_body
from tokenrelay.server.collect import collect_answer
from tokenrelay.server.compat_request import (
    ANTHROPIC_NAMES,
    OPENAI_NAMES,
    AnthropicMessagesRequest,
    OpenAIChatRequest,
    validate_compat,
)
from tokenrelay.server.dialects import ANTHROPIC, OPENAI, Dialect, retry_after_header
from tokenrelay.server.generation import start_generation
from tokenrelay.server.responses import EventStreamResponse
from tokenrelay.server.state import AppState, request_id_of
from tokenrelay.shaping.shaper import Shaping
from tokenrelay.wire import anthropic, openai
from tokenrelay.wire.common import EventEncoder


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.tokenrelay
    return state


def _ended_badly(dialect: Dialect, ending: dict[str, Any], started: _Started) -> Response:
    error_type = ending.get("error_type", "cancelled")
    headers = {"x-stream-id": started.stream_id, **retry_after_header(ending.get("retry_after"))}
    return dialect.error_response(error_type, started.request_id, headers=headers)


@dataclass(frozen=True, slots=True)
class _Started:
    state: AppState
    generation: GenerationRequest
    stream_id: str
    request_id: str


async def _start(
    request: Request,
    chat: OpenAIChatRequest | AnthropicMessagesRequest,
    names: dict[str, str],
) -> _Started:
    state = _state(request)
    provider, model, canonical = state.registry.resolve(chat.model)
    request_id = request_id_of(request)
    generation = chat.to_generation(model, request_id)
    streams = state.settings.streams
    # The provider's own chunking unless configured otherwise; JSON partials have no wire form
    # in these dialects, so they are not computed.
    shaping = Shaping(chunking=streams.compat_chunking, max_hold=streams.max_hold_ms / 1000)
    stream_id = await start_generation(
        request,
        state,
        provider,
        generation,
        canonical,
        names,
        continue_on_error=streams.on_upstream_error == "continue",
        shaping=shaping,
    )
    return _Started(state, generation, stream_id, request_id)


ChatModel = TypeVar("ChatModel", OpenAIChatRequest, AnthropicMessagesRequest)


async def _parse(request: Request, model: type[ChatModel]) -> ChatModel:
    limits = _state(request).settings.server
    data = await read_json_body(request, limits.max_body_bytes_v1)
    return validate_compat(model, data, limits.max_tokens_limit)


def _stream(started: _Started, dialect: Dialect, encoder: EventEncoder) -> Response:
    return EventStreamResponse(
        started.state.manager,
        started.stream_id,
        request_id=started.request_id,
        encoder=encoder,
        dialect=dialect,
    )


async def _answer(
    request: Request, started: _Started, dialect: Dialect
) -> tuple[Answer, str] | Response:
    """A finished answer and its finish reason, or the response for one that failed.

    A content filter is a finish in both dialects (with the partial text), as each reports it.
    """
    answer = await collect_answer(started.state.manager, started.stream_id, request.receive)
    if answer is None:
        return Response(status_code=499)  # the client is gone; nobody reads this
    ending = answer.ending
    finish = (
        "content_filter"
        if ending.get("error_type") == "content_filter"
        else ending.get("finish_reason")
    )
    if finish is None:
        return _ended_badly(dialect, ending, started)
    return answer, finish


async def chat_completions(request: Request) -> Response:
    chat = await _parse(request, OpenAIChatRequest)
    started = await _start(request, chat, OPENAI_NAMES)
    completion_id = "chatcmpl-" + started.stream_id.removeprefix("str_")
    created = int(time.time())
    if chat.stream:
        include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
        encoder = openai.ChunkEncoder(completion_id, chat.model, created, include_usage)
        return _stream(started, OPENAI, encoder)
    outcome = await _answer(request, started, OPENAI)
    if isinstance(outcome, Response):
        return outcome
    answer, finish = outcome
    body = openai.completion(completion_id, chat.model, created, answer, finish)
    return JSONResponse(body, headers={"x-stream-id": started.stream_id})


async def messages(request: Request) -> Response:
    chat = await _parse(request, AnthropicMessagesRequest)
    started = await _start(request, chat, ANTHROPIC_NAMES)
    message_id = "msg_" + started.stream_id.removeprefix("str_")
    input_tokens = started.generation.estimated_prompt_tokens
    if chat.stream:
        encoder = anthropic.EventEncoder(message_id, chat.model, input_tokens)
        return _stream(started, ANTHROPIC, encoder)
    outcome = await _answer(request, started, ANTHROPIC)
    if isinstance(outcome, Response):
        return outcome
    answer, finish = outcome
    body = anthropic.message_object(
        message_id,
        chat.model,
        anthropic.content_blocks(answer),
        anthropic.FINISH_TO_STOP.get(finish, "end_turn"),
        answer.ending.get("usage") or {"prompt_tokens": input_tokens},
    )
    return JSONResponse(body, headers={"x-stream-id": started.stream_id})


async def list_models(request: Request) -> Response:
    state = _state(request)
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": name.partition("/")[0]}
        for name in visible_models(request, state.registry.known_models())
    ]
    return JSONResponse({"object": "list", "data": data})


ROUTES = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/messages", messages, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
]
