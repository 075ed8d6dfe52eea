"""The mock upstream's ASGI app: `/v1/chat/completions` and `/v1/messages`, streaming and not.

Requests are read by tokenrelay's own request models (server/compat_request.py), and answers
rendered by its own encoders (`wire/`), fed by the sim provider through the same delta-to-event
step as a stream's producer (`streams/structured.py`): so the mock and tokenrelay's compatible
endpoints speak byte-identical formats, tool calls and reasoning included, and an agent can be
built against the mock with no key. Faults come from the model name (`scenario.py`). A
connection reset is a real one: the response is abandoned mid-body, so the client sees a
chunked body cut short.

Like Anthropic's API, the mock checks the thinking sent back in history: each block's
signature must be the one the mock gave with it, and with thinking on, an assistant turn that
calls tools must start with its thinking (`_check_thinking`).

`GET /_mock/requests` returns the record of every exchange, including when a client went
away (`client_gone_at`): the tests use it to prove that a cancel reached the upstream. With
`?bodies=1` each exchange also holds the body it was sent: what reached the upstream.

The prompt is counted as the real APIs count it, tool definitions included (four characters a
token), so its count differs from tokenrelay's own estimate, which counts only the messages'
text; `cached-N` and `cache-write-N` in the model name add prompt tokens read from and written
to a cache. The count goes out before the answer (Anthropic's `message_start`) and with it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tokenrelay import events as ev
from tokenrelay.answer import Answer
from tokenrelay.errors import (
    FieldProblem,
    GenerationError,
    InvalidRequest,
    NetworkError,
    client_message,
)
from tokenrelay.mock.record import Exchange, Recorder
from tokenrelay.mock.scenario import MOCK_SECRET, REDIRECT_TARGET, Scenario, read_scenario
from tokenrelay.providers import sim_agent
from tokenrelay.providers.base import GenerationRequest, Usage
from tokenrelay.providers.sim import SimProvider, SimTiming
from tokenrelay.server.compat_request import (
    AnthropicMessagesRequest,
    OpenAIChatRequest,
    validate_compat,
)
from tokenrelay.server.responses import until_disconnect
from tokenrelay.streams.structured import Structured
from tokenrelay.wire import anthropic, anthropic_request, openai
from tokenrelay.wire.common import EventEncoder


class SimulatedReset(Exception):
    """Raised to abandon a response mid-body: the server then drops the connection."""


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

    def generation(self, body: dict[str, Any], model: str) -> GenerationRequest:
        """The request the sim is given. Anthropic's forced JSON tool is a JSON answer."""
        if self.name == "openai":
            chat: OpenAIChatRequest | AnthropicMessagesRequest
            chat = validate_compat(OpenAIChatRequest, body, 1 << 20)
            return chat.to_generation(model, "")
        chat = validate_compat(AnthropicMessagesRequest, body, 1 << 20)
        _check_thinking(body)
        generation = chat.to_generation(model, "")
        if anthropic_request.forced_json_tool(body):
            schema = generation.tools[0].parameters if generation.tools else {}
            fmt = {"type": "json_schema", "json_schema": {"schema": schema}}
            generation = replace(generation, tools=(), tool_choice=None, response_format=fmt)
        return generation

    def encoder(
        self, model: str, prompt_tokens: int, include_usage: bool, json: bool
    ) -> EventEncoder:
        if self.name == "openai":
            return openai.ChunkEncoder("chatcmpl-mock", model, int(time.time()), include_usage)
        return anthropic.EventEncoder("msg_mock", model, prompt_tokens, json_tool=json)


def create_mock_app(timing: SimTiming | None = None) -> Starlette:
    sim = SimProvider(timing or SimTiming())
    recorder = Recorder()

    async def chat_completions(request: Request) -> Response:
        return await _serve(request, _Dialect("openai"))

    async def messages(request: Request) -> Response:
        return await _serve(request, _Dialect("anthropic"))

    async def _serve(request: Request, dialect: _Dialect) -> Response:
        body = orjson.loads(await request.body() or b"{}")
        model = str(body.get("model", "default")) if isinstance(body, dict) else "default"
        scenario = read_scenario(model, sim.timing)
        stream = isinstance(body, dict) and bool(body.get("stream"))
        exchange = recorder.begin(request.url.path, model, stream, body)
        try:
            generation = dialect.generation(body, scenario.sim_model)
        except InvalidRequest as exc:
            recorder.end(exchange, "failed")
            return JSONResponse(dialect.error_body("invalid_request", exc.detail), 400)
        if scenario.status is not None:
            recorder.end(exchange, "failed")
            error_type = {429: "rate_limit", 529: "overloaded"}.get(scenario.status, "api_error")
            error = dialect.error_body(error_type, _error_message(scenario, "api_error"))
            headers = {"retry-after": "1"} if scenario.status == 429 else {}
            if scenario.status == 302:  # somewhere else entirely: a client must not follow
                headers["location"] = REDIRECT_TARGET
            return JSONResponse(error, status_code=scenario.status, headers=headers)
        json_tool = dialect.name == "anthropic" and anthropic_request.forced_json_tool(body)
        prompt = _counted_prompt(generation, scenario)
        produce = _Production(sim, generation, scenario, prompt)
        if stream:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            encoder = dialect.encoder(model, prompt.prompt_tokens, include_usage, json_tool)
            return _MockStream(produce, exchange, recorder, encoder.encode_one)
        return await _complete(produce, exchange, recorder, dialect, model, json_tool)

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
        return JSONResponse(recorder.dump(bodies=request.query_params.get("bodies") == "1"))

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


def _check_thinking(body: dict[str, Any]) -> None:
    """Refuse what Anthropic's API refuses of thinking in history: a signature that is not the
    one given with that thinking (the mock's are the sim's, `sim_agent.signature`), and, with
    thinking on, a last assistant turn that calls tools without its thinking first."""
    problems = []
    last_assistant: tuple[int, list[Any]] | None = None
    for i, message in enumerate(body["messages"]):
        content = message["content"]
        blocks = content if isinstance(content, list) else []
        if message["role"] == "assistant":
            last_assistant = (i, blocks)
        for j, block in enumerate(blocks):
            if block["type"] == "thinking" and block["signature"] != sim_agent.signature(
                block["thinking"]
            ):
                field = f"messages[{i}].content[{j}].signature"
                problems.append(FieldProblem(field, "Invalid `signature` in `thinking` block"))
    thinking = body.get("thinking") or {}
    if thinking.get("type") == "enabled" and last_assistant is not None:
        i, blocks = last_assistant
        calls = any(block["type"] == "tool_use" for block in blocks)
        if calls and blocks[0]["type"] not in ("thinking", "redacted_thinking"):
            problem = (
                "Expected `thinking` or `redacted_thinking`: with thinking enabled, an "
                "assistant turn that calls tools must start with its thinking block"
            )
            problems.append(FieldProblem(f"messages[{i}].content[0].type", problem))
    if problems:
        raise InvalidRequest(problems)


def _counted_prompt(generation: GenerationRequest, scenario: Scenario) -> Usage:
    """The prompt as a real API counts it: the messages and the tool definitions (four
    characters a token), plus what the scenario says was read from or written to a cache."""
    definitions = sum(
        len(tool.name) + len(tool.description) + len(orjson.dumps(tool.parameters))
        for tool in generation.tools
    )
    counted = generation.estimated_prompt_tokens + definitions // 4
    return Usage(
        counted + scenario.cached + scenario.cache_write,
        0,
        cached_tokens=scenario.cached or None,
        cache_creation_tokens=scenario.cache_write or None,
    )


class _Production:
    """The sim's answer as a stream's events: start, tokens, reasoning and tool calls (as the
    producer makes them), then done or error; `outcome` says how it ended."""

    def __init__(
        self, sim: SimProvider, generation: GenerationRequest, scenario: Scenario, prompt: Usage
    ):
        self.sim, self.generation, self.scenario = sim, generation, scenario
        self.prompt = prompt  # the mock's count of the prompt (_counted_prompt)
        self.outcome = "completed"  # or failed, reset

    def _count(self, usage: Usage) -> Usage:
        """The sim's count of the answer, with the mock's count of the prompt."""
        prompt = self.prompt
        return replace(
            prompt,
            completion_tokens=usage.completion_tokens,
            reasoning_tokens=usage.reasoning_tokens,
        )

    async def events(self) -> AsyncIterator[ev.Event]:
        pending: list[ev.Event] = []
        seq = 0

        def emit(kind: ev.EventType, fields: dict[str, Any]) -> None:
            nonlocal seq
            seq += 1
            pending.append(ev.make_event(seq, kind, **fields))

        structured = Structured(emit, tools=self.generation.tools)
        emit("start", {"stream_id": "mock", "model": self.generation.model})
        emit("usage", {"usage": self.prompt.as_dict()})
        tokens, finish, usage = 0, "stop", None
        try:
            async for delta in self.sim.stream(self.generation):
                if delta.reasoning or delta.signature or delta.redacted:
                    structured.reasoning(delta.reasoning, delta.signature, delta.redacted)
                if delta.tool is not None:
                    structured.tool(delta.tool)
                if delta.text:
                    tokens += 1
                    emit("token", {"content": delta.text})
                if delta.logprobs is not None:
                    emit("logprobs", {"content": delta.logprobs})
                finish, usage = delta.finish_reason or finish, delta.usage or usage
                while pending:
                    yield pending.pop(0)
        except NetworkError:
            self.outcome = "reset"
            return
        except GenerationError as exc:
            self.outcome = "failed"
            message = _error_message(self.scenario, exc.error_type)
            told = self._count(Usage(0, tokens + structured.pieces)).as_dict()
            yield ev.error_event(seq + 1, exc.error_type, message, exc.retryable, usage=told)
            return
        structured.finish()
        totals = self._count(usage).as_dict() if usage else None
        emit("done", {"finish_reason": finish, "token_count": tokens, "usage": totals})
        while pending:
            yield pending.pop(0)


async def _complete(
    produce: _Production,
    exchange: Exchange,
    recorder: Recorder,
    dialect: _Dialect,
    model: str,
    json_tool: bool,
) -> Response:
    answer = Answer()
    async for event in produce.events():
        answer.add(event)
    if produce.outcome != "completed":
        recorder.end(exchange, "failed")
        error_type = answer.ending.get("error_type", "api_error")
        error = dialect.error_body(error_type, _error_message(produce.scenario, error_type))
        status = 429 if error_type == "rate_limit" else 500
        return JSONResponse(error, status_code=status, headers={"retry-after": "1"})
    recorder.end(exchange, "completed")
    finish = answer.ending["finish_reason"]
    if dialect.name == "openai":
        return JSONResponse(
            openai.completion("chatcmpl-mock", model, int(time.time()), answer, finish)
        )
    usage = answer.ending.get("usage") or {}
    content = anthropic.content_blocks(answer)
    if json_tool:
        content = [
            {
                "type": "tool_use",
                "id": "toolu_json",
                "name": anthropic_request.JSON_TOOL,
                "input": orjson.loads(answer.text or "{}"),
            }
        ]
    stop = "tool_use" if json_tool else anthropic.FINISH_TO_STOP.get(finish, "end_turn")
    return JSONResponse(anthropic.message_object("msg_mock", model, content, stop, usage))


class _MockStream(Response):
    """Streams the sim in a dialect, recording when the client leaves; resets for real."""

    def __init__(
        self,
        produce: _Production,
        exchange: Exchange,
        recorder: Recorder,
        encode: Callable[[ev.Event], bytes],
    ) -> None:
        super().__init__(media_type="text/event-stream", headers={"cache-control": "no-cache"})
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self._produce, self._exchange, self._recorder, self._encode = (
            produce,
            exchange,
            recorder,
            encode,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        outcome = await until_disconnect(receive, self._write(send))
        if outcome is None:
            self._recorder.end(self._exchange, "client_gone")
        elif outcome == "reset":
            self._recorder.end(self._exchange, "reset")
            raise SimulatedReset()
        else:
            self._recorder.end(self._exchange, outcome)

    async def _write(self, send: Send) -> str:
        async for event in self._produce.events():
            if self._exchange.first_byte_at is None:
                self._exchange.first_byte_at = time.time()
            body = self._encode(event)
            if body:
                await send({"type": "http.response.body", "body": body, "more_body": True})
        if self._produce.outcome != "reset":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        return self._produce.outcome
