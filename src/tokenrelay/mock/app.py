"""The mock upstream's ASGI app: `/v1/chat/completions` and `/v1/messages`, streaming and not.

Both dialects are rendered by tokenrelay's own encoders (`wire/`), fed by the sim provider,
so the mock and tokenrelay's compatible endpoints speak byte-identical formats. Faults come
from the model name (`scenario.py`). A connection reset is a real one: the response is
abandoned mid-body, so the client sees a chunked body cut short.

`GET /_mock/requests` returns the record of every exchange, including when a client went
away (`client_gone_at`): the tests use it to prove that a cancel reached the upstream.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tokenrelay import events as ev
from tokenrelay._types import Role
from tokenrelay.errors import GenerationError, NetworkError, client_message
from tokenrelay.mock.record import Exchange, Recorder
from tokenrelay.mock.scenario import MOCK_SECRET, Scenario, read_scenario
from tokenrelay.providers.base import GenerationRequest, Message
from tokenrelay.providers.sim import SimProvider, SimTiming
from tokenrelay.server.responses import until_disconnect
from tokenrelay.wire import anthropic, openai
from tokenrelay.wire.common import EventEncoder


class SimulatedReset(Exception):
    """Raised to abandon a response mid-body: the server then drops the connection."""


def _messages(raw: Any, system: Any = None) -> tuple[Message, ...]:
    out = [Message("system", system)] if isinstance(system, str) and system else []
    for m in raw if isinstance(raw, list) else []:
        content = m.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        role = {"developer": "system"}.get(m.get("role"), m.get("role"))
        if role in ("system", "user", "assistant") and isinstance(content, str):
            out.append(Message(cast(Role, role), content))
    return tuple(out)


def _error_message(scenario: Scenario, error_type: str) -> str:
    text = client_message(error_type)
    return f"{text} (debug: key={MOCK_SECRET})" if scenario.leak_secret else text


class _Dialect:
    """What differs between the two formats, for the mock's purposes."""

    def __init__(self, name: str) -> None:
        self.name = name

    def error_body(self, error_type: str, message: str) -> dict[str, Any]:
        """The dialect's error object for one of our error types (as the real APIs send)."""
        if self.name == "openai":
            return openai.error_object(error_type, message)
        return anthropic.error_object(error_type, message)

    def encoder(
        self, model: str, prompt_tokens: int, include_usage: bool, json: bool
    ) -> EventEncoder:
        if self.name == "openai":
            return openai.ChunkEncoder("chatcmpl-mock", model, int(time.time()), include_usage)
        return anthropic.EventEncoder("msg_mock", model, prompt_tokens, json_tool=json)

    def json_tool(self, body: dict[str, Any]) -> bool:
        """Whether the request asks for JSON through Anthropic's forced tool."""
        return self.name == "anthropic" and anthropic.forced_json_tool(body)

    def response_format(self, body: dict[str, Any], json_tool: bool) -> Any:
        """What JSON the request asks for: OpenAI's field, or Anthropic's forced JSON tool."""
        if not json_tool:
            return body.get("response_format")
        schema = (body.get("tools") or [{}])[0].get("input_schema")
        return {"type": "json_schema", "json_schema": {"schema": schema}}


def create_mock_app(timing: SimTiming | None = None) -> Starlette:
    sim = SimProvider(timing or SimTiming())
    recorder = Recorder()

    async def chat_completions(request: Request) -> Response:
        return await _serve(request, _Dialect("openai"))

    async def messages(request: Request) -> Response:
        return await _serve(request, _Dialect("anthropic"))

    async def _serve(request: Request, dialect: _Dialect) -> Response:
        body = orjson.loads(await request.body() or b"{}")
        model = str(body.get("model", "default"))
        scenario = read_scenario(model, sim.timing)
        json_tool = dialect.json_tool(body)
        generation = GenerationRequest(
            model=scenario.sim_model,
            messages=_messages(body.get("messages"), body.get("system")),
            max_tokens=body.get("max_tokens"),
            response_format=dialect.response_format(body, json_tool),
        )
        stream = bool(body.get("stream"))
        exchange = recorder.begin(request.url.path, model, stream)
        if scenario.status is not None:
            recorder.end(exchange, "failed")
            error_type = {429: "rate_limit", 529: "overloaded"}.get(scenario.status, "api_error")
            error = dialect.error_body(error_type, _error_message(scenario, "api_error"))
            headers = {"retry-after": "1"} if scenario.status == 429 else None
            return JSONResponse(error, status_code=scenario.status, headers=headers)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if stream:
            encoder = dialect.encoder(
                model,
                generation.estimated_prompt_tokens,
                include_usage,
                json=json_tool,
            )
            return _MockStream(sim, generation, scenario, exchange, recorder, encoder.encode_one)
        return await _complete(sim, generation, scenario, exchange, recorder, dialect, model)

    async def list_models(request: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "sim"}
                    for m in sim.models()
                ],
            }
        )

    async def requests_record(request: Request) -> Response:
        if request.method == "DELETE":
            recorder.clear()
        return JSONResponse(recorder.dump())

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/_mock/requests", requests_record, methods=["GET", "DELETE"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


async def _complete(
    sim: SimProvider,
    generation: GenerationRequest,
    scenario: Scenario,
    exchange: Exchange,
    recorder: Recorder,
    dialect: _Dialect,
    model: str,
) -> Response:
    parts: list[str] = []
    finish, usage = "stop", None
    try:
        async for delta in sim.stream(generation):
            parts.append(delta.text)
            finish = delta.finish_reason or finish
            usage = delta.usage or usage
    except GenerationError as exc:
        recorder.end(exchange, "failed")
        error = dialect.error_body(exc.error_type, _error_message(scenario, exc.error_type))
        status = 429 if exc.error_type == "rate_limit" else 500
        return JSONResponse(error, status_code=status, headers={"retry-after": "1"})
    recorder.end(exchange, "completed")
    text = "".join(parts)
    prompt, completion = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
    if dialect.name == "openai":
        totals = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        return JSONResponse(
            openai.completion("chatcmpl-mock", model, int(time.time()), text, finish, totals)
        )
    content = [{"type": "text", "text": text}]
    stop = anthropic.FINISH_TO_STOP.get(finish, "end_turn")
    return JSONResponse(
        anthropic.message_object("msg_mock", model, content, stop, prompt, completion)
    )


class _MockStream(Response):
    """Streams the sim in a dialect, recording when the client leaves; resets for real."""

    def __init__(
        self,
        sim: SimProvider,
        generation: GenerationRequest,
        scenario: Scenario,
        exchange: Exchange,
        recorder: Recorder,
        encode: Callable[[ev.Event], bytes],
    ) -> None:
        super().__init__(media_type="text/event-stream", headers={"cache-control": "no-cache"})
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self._args = (sim, generation, scenario, exchange, recorder, encode)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange, recorder = self._args[3], self._args[4]
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        outcome = await until_disconnect(receive, self._produce(send))
        if outcome is None:
            recorder.end(exchange, "client_gone")
        elif outcome == "reset":
            recorder.end(exchange, "reset")
            raise SimulatedReset()
        else:
            recorder.end(exchange, outcome)

    async def _produce(self, send: Send) -> str:
        sim, generation, scenario, exchange, _, encode = self._args

        async def write(event: ev.Event) -> None:
            if exchange.first_byte_at is None:
                exchange.first_byte_at = time.time()
            await send({"type": "http.response.body", "body": encode(event), "more_body": True})

        seq = 1
        await write(ev.start_event(seq, "mock", generation.model))
        tokens, finish, usage = 0, "stop", None
        try:
            async for delta in sim.stream(generation):
                if delta.text:
                    seq, tokens = seq + 1, tokens + 1
                    await write(ev.token_event(seq, delta.text))
                finish, usage = delta.finish_reason or finish, delta.usage or usage
        except NetworkError:
            return "reset"
        except GenerationError as exc:
            message = _error_message(scenario, exc.error_type)
            await write(ev.error_event(seq + 1, exc.error_type, message, exc.retryable))
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return "failed"
        totals = usage.as_dict() if usage else None
        await write(
            ev.make_event(seq + 1, "done", finish_reason=finish, token_count=tokens, usage=totals)
        )
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return "completed"
