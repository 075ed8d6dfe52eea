"""Requests in the OpenAI and Anthropic dialects, turned into a GenerationRequest.

Unlike the native API, unknown fields are accepted and ignored: the official SDKs send fields
(`user`, `seed`, `metadata`, `stop`, ...) that do not change a streamed text answer. Fields we
cannot honour and that would change the answer (`n` > 1, `tools`, tool messages) are refused
with a 422 naming them, rather than silently dropped.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tokenrelay._types import JSONObject, Role
from tokenrelay.errors import FieldProblem, InvalidRequest
from tokenrelay.providers.base import GenerationRequest, Message
from tokenrelay.server.chat_request import MODEL_NAME, problems_of

_ALLOW = ConfigDict(extra="allow")
M = TypeVar("M", bound=BaseModel)


class TextPart(BaseModel):
    model_config = _ALLOW
    type: Literal["text"]
    text: str


def _text(content: str | list[TextPart] | None) -> str:
    if content is None:
        return ""
    return content if isinstance(content, str) else "".join(p.text for p in content)


class OpenAIMessage(BaseModel):
    model_config = _ALLOW
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None


class StreamOptions(BaseModel):
    model_config = _ALLOW
    include_usage: bool = False


class OpenAIChatRequest(BaseModel):
    model_config = _ALLOW
    model: str = Field(min_length=1, max_length=200, pattern=MODEL_NAME)
    messages: list[OpenAIMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    response_format: JSONObject | None = None
    n: int | None = Field(default=None, ge=1, le=1)
    tools: list[Any] | None = Field(default=None, max_length=0)

    def to_generation(self, model: str, request_id: str) -> GenerationRequest:
        messages = tuple(
            Message("system" if m.role == "developer" else m.role, _text(m.content))
            for m in self.messages
        )
        fmt = self.response_format
        return GenerationRequest(
            model=model,
            messages=messages,
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            response_format=fmt if fmt and fmt.get("type") != "text" else None,
            request_id=request_id,
        )


class AnthropicMessage(BaseModel):
    model_config = _ALLOW
    role: Literal["user", "assistant"]
    content: str | list[TextPart]

    @field_validator("content")
    @classmethod
    def _not_empty(cls, value: str | list[TextPart]) -> str | list[TextPart]:
        if not _text(value).strip():
            raise ValueError("must not be empty")
        return value


class AnthropicMessagesRequest(BaseModel):
    model_config = _ALLOW
    model: str = Field(min_length=1, max_length=200, pattern=MODEL_NAME)
    messages: list[AnthropicMessage] = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    system: str | list[TextPart] | None = None
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    tools: list[Any] | None = Field(default=None, max_length=0)

    def to_generation(self, model: str, request_id: str) -> GenerationRequest:
        messages: list[Message] = []
        if self.system:
            messages.append(Message("system", _text(self.system)))
        roles: dict[str, Role] = {"user": "user", "assistant": "assistant"}
        messages.extend(Message(roles[m.role], _text(m.content)) for m in self.messages)
        return GenerationRequest(
            model=model,
            messages=tuple(messages),
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            request_id=request_id,
        )


def validate_compat(model: type[M], data: Any, max_tokens_limit: int) -> M:
    if not isinstance(data, dict):
        raise InvalidRequest([FieldProblem("body", "must be a JSON object")])
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(problems_of(exc)) from None
    limit = getattr(parsed, "max_completion_tokens", None) or getattr(parsed, "max_tokens", None)
    if isinstance(limit, int) and limit > max_tokens_limit:
        raise InvalidRequest([FieldProblem("max_tokens", f"must be at most {max_tokens_limit}")])
    return parsed
