"""The native chat request: read the body within its limit, parse, validate, name every bad field.

Validation is pydantic, once per request (never per token). Every problem is reported, each with
its field path, in one 422. POST bodies are validated strictly (JSON `"5"` is not an integer);
GET query parameters are strings by nature, so they are converted first (lax mode).
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import Request

from tokenrelay._types import Chunking, DisconnectPolicy, JSONObject
from tokenrelay.errors import (
    FieldProblem,
    InvalidRequest,
    MalformedJSON,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from tokenrelay.providers.base import GenerationRequest
from tokenrelay.providers.content import Message
from tokenrelay.schemas import schema_problem
from tokenrelay.server.native_models import MessageIn, NamedToolIn, ToolIn, tool_choice
from tokenrelay.server.problems import problems_of, shown_key
from tokenrelay.shaping.shaper import Shaping

_FORBID = ConfigDict(extra="forbid")
# Any characters but control ones: a model name is logged, and a line break in it would forge
# a log line. Upstream model names are open-ended ("org/model:variant"), so nothing stricter.
MODEL_NAME = r"^[^\x00-\x1f\x7f]+$"


def _not_blank(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValueError("must not be empty")
    return value


class JsonSchemaSpec(BaseModel):
    model_config = _FORBID
    name: str = Field(default="response", min_length=1, max_length=64)
    schema_: JSONObject = Field(alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(BaseModel):
    model_config = _FORBID
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None


# The parameters a request model names as GenerationRequest does: taken over as they are.
_SAME_NAMED = (
    "temperature",
    "parallel_tool_calls",
    "top_p",
    "top_k",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "top_logprobs",
    "user",
    "service_tier",
    "reasoning_effort",
)


def same_named(request: BaseModel) -> dict[str, Any]:
    """The parameters `request` has under GenerationRequest's own names."""
    return {name: getattr(request, name) for name in _SAME_NAMED if hasattr(request, name)}


class ChatRequest(BaseModel):
    model_config = _FORBID
    message: str | None = None
    messages: list[MessageIn] | None = Field(default=None, min_length=1)
    system_prompt: str | None = None
    model: str | None = Field(default=None, min_length=1, max_length=200, pattern=MODEL_NAME)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    chunking: Chunking | None = None  # None: the server's default ([streams] chunking)
    max_hold_ms: int | None = Field(default=None, ge=0, le=1000)
    response_format: ResponseFormat | None = None
    on_disconnect: DisconnectPolicy = "cancel"
    on_upstream_error: Literal["fail", "continue"] | None = None  # None: the server's setting
    tools: list[ToolIn] | None = Field(default=None, min_length=1, max_length=128)
    tool_choice: Literal["auto", "none", "required"] | NamedToolIn | None = None
    parallel_tool_calls: bool | None = None
    validate_tool_arguments: bool = False  # check each call's arguments against its schema
    include_reasoning: bool = True  # send `reasoning` events
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    thinking_budget: int | None = Field(default=None, ge=1024)  # Anthropic's minimum
    stop: str | list[str] | None = None
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1)
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    user: str | None = Field(default=None, max_length=256)
    service_tier: str | None = Field(default=None, max_length=32)

    _message_not_blank = field_validator("message")(_not_blank)

    def shaping(self, default_chunking: Chunking, default_hold_ms: int) -> Shaping:
        fmt = self.response_format
        wants_json = fmt is not None and fmt.type != "text"
        schema = fmt.json_schema.schema_ if fmt is not None and fmt.json_schema else None
        hold_ms = self.max_hold_ms if self.max_hold_ms is not None else default_hold_ms
        return Shaping(
            chunking=self.chunking or default_chunking,
            max_hold=hold_ms / 1000,
            json=wants_json,
            schema=schema if wants_json else None,
        )

    def to_generation(self, model: str, request_id: str) -> GenerationRequest:
        messages: list[Message] = []
        if self.system_prompt:
            messages.append(Message("system", self.system_prompt))
        if self.messages is not None:
            messages.extend(m.to_message(f"messages[{i}]") for i, m in enumerate(self.messages))
        elif self.message is not None:
            messages.append(Message("user", self.message))
        fmt = None
        if self.response_format is not None and self.response_format.type != "text":
            fmt = self.response_format.model_dump(by_alias=True, exclude_none=True)
        stop = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return GenerationRequest(
            model=model,
            messages=tuple(messages),
            max_tokens=self.max_tokens,
            response_format=fmt,
            tools=tuple(tool.to_tool() for tool in self.tools or ()),
            tool_choice=tool_choice(self.tool_choice),
            stop=tuple(stop),
            thinking_budget=self.thinking_budget,
            request_id=request_id,
            **same_named(self),
        )


def _shape_problems(data: JSONObject, max_tokens_limit: int) -> list[FieldProblem]:
    """Rules across fields, and limits from settings, which a static model cannot state."""
    problems = []
    has_message, has_messages = data.get("message") is not None, data.get("messages") is not None
    if has_message == has_messages:
        problems.append(FieldProblem("message", "give exactly one of message or messages"))
    fmt = data.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and not fmt.get("json_schema"):
        problems.append(FieldProblem("response_format.json_schema", "is required for json_schema"))
    spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
    if isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
        problem = schema_problem(spec["schema"])
        if problem:
            problems.append(FieldProblem("response_format.json_schema.schema", problem))
    max_tokens = data.get("max_tokens")
    if isinstance(max_tokens, str) and max_tokens.isdigit():
        max_tokens = int(max_tokens)  # a GET parameter
    if isinstance(max_tokens, int) and max_tokens > max_tokens_limit:
        problems.append(FieldProblem("max_tokens", f"must be at most {max_tokens_limit}"))
    return problems


def validate_chat(data: Any, *, strict: bool, max_tokens_limit: int) -> ChatRequest:
    if not isinstance(data, dict):
        raise InvalidRequest([FieldProblem("body", "must be a JSON object")])
    problems = _shape_problems(data, max_tokens_limit)
    try:
        request = ChatRequest.model_validate(data, strict=strict)
    except ValidationError as exc:
        raise InvalidRequest(problems_of(exc) + problems) from None
    if problems:
        raise InvalidRequest(problems)
    return request


async def read_json_body(request: Request, limit: int) -> Any:
    """The body as JSON: 415 unless JSON, 413 past `limit` without reading further, 400 if bad."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType()
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge()
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MalformedJSON() from None


_JSON_QUERY_FIELDS = ("messages", "response_format", "tools", "tool_choice", "stop")
_QUERY_NOT_FIELDS = frozenset({"last_event_id", "token"})  # a resume; auth (auth.py)


def query_to_data(params: list[tuple[str, str]]) -> JSONObject:
    """GET parameters as a request dict: repeated keys are an error, JSON fields are decoded."""
    data: JSONObject = {}
    problems = []
    for key, value in params:
        if key in _QUERY_NOT_FIELDS:
            continue
        if key in data:
            problems.append(FieldProblem(shown_key(key), "given more than once"))
            continue
        if key in _JSON_QUERY_FIELDS:
            try:
                data[key] = orjson.loads(value)
            except orjson.JSONDecodeError:
                problems.append(FieldProblem(key, "must be JSON"))
                continue
        else:
            data[key] = value
    if problems:
        raise InvalidRequest(problems)
    return data
