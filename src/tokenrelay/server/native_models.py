"""The native API's conversation: messages with parts, tool calls and results, reasoning, tools.

Checked with pydantic (each problem named by its field), then turned into the conversation
model (providers/content.py) that every provider takes:

    {"role": "user", "content": "text" | [parts]}
        parts: {"type": "text", "text"}, {"type": "image", "url" | "data" + "media_type",
               "detail"?}, {"type": "document", "url" | "data" + "media_type" | "text", "title"?}
    {"role": "assistant", "content"?, "tool_calls": [{"id", "name", "arguments"}],
     "reasoning": [{"content", "signature"} | {"redacted"}]}
    {"role": "tool", "tool_call_id", "content", "is_error"?}
    tools: [{"name", "description"?, "parameters"?}]; tool_choice: "auto" | "none" |
    "required" | {"name"}
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from tokenrelay._types import JSONObject
from tokenrelay.providers.content import (
    Document,
    Image,
    Message,
    Part,
    Text,
    Thinking,
    Tool,
    ToolCall,
    ToolChoice,
)
from tokenrelay.schemas import schema_problem

_FORBID = ConfigDict(extra="forbid")


def valid_schema(schema: JSONObject) -> JSONObject:
    """A tool's schema must be one (as response_format's is): a model cannot follow a broken
    one, and an upstream would refuse it after the stream began."""
    problem = schema_problem(schema)
    if problem is not None:
        raise ValueError(problem)
    return schema


TOOL_NAME = r"^[A-Za-z0-9_-]{1,64}$"  # what OpenAI and Anthropic both accept
# Images and files by URL, or inline as a base64 data: URL (the form both APIs take).
DATA_URL = r"^data:[\w.+-]+/[\w.+-]+;base64,[A-Za-z0-9+/]+=*$"
URL_OR_DATA = r"^(https?://\S+|data:[\w.+-]+/[\w.+-]+;base64,[A-Za-z0-9+/]+=*)$"


class TextIn(BaseModel):
    model_config = _FORBID
    type: Literal["text"]
    text: str


class ImageIn(BaseModel):
    model_config = _FORBID
    type: Literal["image"]
    url: str | None = Field(default=None, pattern=URL_OR_DATA)
    data: str | None = None
    media_type: str | None = None
    detail: Literal["low", "high", "auto"] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ImageIn:
        if (self.url is None) == (self.data is None):
            raise ValueError("give exactly one of url or data")
        if self.data is not None and not self.media_type:
            raise ValueError("data needs media_type")
        return self


class DocumentIn(BaseModel):
    model_config = _FORBID
    type: Literal["document"]
    url: str | None = Field(default=None, pattern=r"^https?://")
    data: str | None = None
    media_type: str | None = None
    text: str | None = None
    title: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DocumentIn:
        if sum(source is not None for source in (self.url, self.data, self.text)) != 1:
            raise ValueError("give exactly one of url, data or text")
        return self


PartIn = Annotated[TextIn | ImageIn | DocumentIn, Field(discriminator="type")]


class ToolCallIn(BaseModel):
    model_config = _FORBID
    id: str = Field(min_length=1, max_length=200)
    name: str = Field(pattern=TOOL_NAME)
    arguments: JSONObject | str


class ReasoningIn(BaseModel):
    model_config = _FORBID
    content: str = ""
    signature: str = ""
    redacted: str = ""


class MessageIn(BaseModel):
    model_config = _FORBID
    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[PartIn] | None = Field(default=None, validate_default=True)
    tool_calls: list[ToolCallIn] | None = None
    reasoning: list[ReasoningIn] | None = None
    tool_call_id: str | None = None
    is_error: bool = False

    @field_validator("content")
    @classmethod
    def _content_not_empty(cls, content: Any, info: ValidationInfo) -> Any:
        if info.data.get("role") in ("system", "user"):
            if content is None:
                raise ValueError("is required")
            if not _has_content(content):
                raise ValueError("must not be empty")
        return content

    @model_validator(mode="after")
    def _fits_its_role(self) -> MessageIn:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id")
        if self.role != "tool" and (self.tool_call_id or self.is_error):
            raise ValueError("tool_call_id and is_error belong to tool messages")
        if self.role != "assistant" and (self.tool_calls or self.reasoning):
            raise ValueError("tool_calls and reasoning belong to assistant messages")
        if self.role == "assistant" and not (_has_content(self.content) or self.tool_calls):
            raise ValueError("an assistant message needs content or tool_calls")
        return self

    def to_message(self, origin: str) -> Message:
        calls = tuple(
            ToolCall(
                call.id,
                call.name,
                call.arguments
                if isinstance(call.arguments, str)
                else orjson.dumps(call.arguments).decode(),
            )
            for call in self.tool_calls or ()
        )
        thinking = tuple(
            Thinking(block.content, block.signature, block.redacted)
            for block in self.reasoning or ()
        )
        return Message(
            self.role,
            _content(self.content),
            tool_calls=calls,
            thinking=thinking,
            tool_call_id=self.tool_call_id or "",
            is_error=self.is_error,
            origin=origin,
        )


def _has_content(content: str | list[Any] | None) -> bool:
    if isinstance(content, str):
        return bool(content.strip())
    return bool(content)


def _content(content: str | list[Any] | None) -> str | tuple[Part, ...]:
    if content is None or isinstance(content, str):
        return content or ""
    return tuple(_part(part) for part in content)


def _part(part: TextIn | ImageIn | DocumentIn) -> Part:
    if isinstance(part, TextIn):
        return Text(part.text)
    if isinstance(part, ImageIn):
        return Image(part.url or "", part.data or "", part.media_type or "", part.detail or "")
    return Document(
        part.url or "", part.data or "", part.media_type or "", part.text or "", part.title or ""
    )


class ToolIn(BaseModel):
    model_config = _FORBID
    name: str = Field(pattern=TOOL_NAME)
    description: str = ""
    parameters: JSONObject = Field(default_factory=lambda: {"type": "object", "properties": {}})

    _schema = field_validator("parameters")(valid_schema)

    def to_tool(self) -> Tool:
        return Tool(self.name, self.description, self.parameters)


class NamedToolIn(BaseModel):
    model_config = _FORBID
    name: str = Field(pattern=TOOL_NAME)


def tool_choice(choice: str | NamedToolIn | None) -> ToolChoice | None:
    if choice is None:
        return None
    if isinstance(choice, NamedToolIn):
        return ToolChoice("tool", choice.name)
    return ToolChoice(choice)  # type: ignore[arg-type]  # checked: auto, none, required
