"""Requests in the OpenAI and Anthropic dialects, checked, and turned into a GenerationRequest.

Every field either dialect defines for its chat endpoint is read: the conversation (content
parts, tool calls and results, reasoning with its signatures), tools, and every sampling and
control parameter. Each is forwarded to the upstream, or refused by name when the upstream
cannot honour it (`Provider.unsupported`, at the route); none is dropped silently. A field we
do not know is refused too ("unknown field"), with exceptions that change nothing an
upstream answers and that the SDKs send: OpenAI's `store` and `metadata`, a message's `name`,
and what the OpenAI SDK echoes back of an assistant turn it was answered with (its
`reasoning_content`, `refusal`, `parsed`, a call's `index`). The mock upstream reads requests
with these same models.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tokenrelay._types import JSONObject
from tokenrelay.errors import FieldProblem, InvalidRequest
from tokenrelay.providers.base import GenerationRequest
from tokenrelay.server.chat_request import MODEL_NAME, same_named
from tokenrelay.server.native_models import DATA_URL, URL_OR_DATA, valid_schema
from tokenrelay.server.problems import problems_of
from tokenrelay.wire import anthropic_request, openai_request

_FORBID = ConfigDict(extra="forbid")
_ALLOW = ConfigDict(extra="allow")  # inside objects whose shape is the upstream's business
M = TypeVar("M", bound=BaseModel)


# ---------------------------------------------------------------- OpenAI


class OpenAIText(BaseModel):
    model_config = _FORBID
    type: Literal["text"]
    text: str


class OpenAIImageURL(BaseModel):
    model_config = _FORBID
    url: str = Field(pattern=URL_OR_DATA)
    detail: Literal["low", "high", "auto"] | None = None


class OpenAIImage(BaseModel):
    model_config = _FORBID
    type: Literal["image_url"]
    image_url: OpenAIImageURL


class OpenAIFileData(BaseModel):
    model_config = _FORBID
    file_data: str = Field(pattern=DATA_URL)
    filename: str | None = None


class OpenAIFile(BaseModel):
    model_config = _FORBID
    type: Literal["file"]
    file: OpenAIFileData


OpenAIPart = Annotated[OpenAIText | OpenAIImage | OpenAIFile, Field(discriminator="type")]


class OpenAIFunctionCall(BaseModel):
    model_config = _FORBID
    name: str = Field(min_length=1)
    arguments: str = ""
    parsed_arguments: Any = None  # echoed back by the SDK's stream helper: `arguments`, parsed


class OpenAIToolCall(BaseModel):
    model_config = _FORBID
    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: OpenAIFunctionCall
    index: int | None = None  # echoed back by the SDK's stream helper; the order says it


class OpenAIThinkingBlock(BaseModel):
    model_config = _FORBID
    index: int | None = None  # as the SDK's stream accumulation keeps it
    type: Literal["thinking", "redacted_thinking"]
    thinking: str = ""
    signature: str = ""
    data: str = ""


class OpenAIMessage(BaseModel):
    model_config = _FORBID
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[OpenAIPart] | None = None
    name: str | None = None  # accepted; no upstream answers differently for it
    tool_calls: list[OpenAIToolCall] | None = None
    tool_call_id: str | None = None
    # An assistant turn as the SDK echoes it back (`messages.append(message)`): the fields
    # it answered with, which say nothing new to an upstream. `reasoning_content` is ours
    # (wire/openai.py); OpenAI-compatible servers take no reasoning back (openai_request.py).
    refusal: str | None = None
    reasoning_content: str | None = None
    # Thinking blocks as tokenrelay sends them (wire/openai.py thinking_block): an Anthropic
    # upstream needs them back, signatures intact.
    thinking_blocks: list[OpenAIThinkingBlock] | None = None
    annotations: list[Any] | None = None
    parsed: Any = None
    audio: None = None
    function_call: None = None

    @model_validator(mode="after")
    def _fits_its_role(self) -> OpenAIMessage:
        answered = self.tool_calls or self.thinking_blocks or self.reasoning_content
        if answered and self.role != "assistant":
            raise ValueError("tool_calls and reasoning belong to assistant messages")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ValueError("tool_call_id goes with role tool, and only with it")
        if self.role in ("system", "developer", "user", "tool") and self.content is None:
            raise ValueError(f"a {self.role} message needs content")
        return self


class OpenAIFunction(BaseModel):
    model_config = _ALLOW  # `strict` and what OpenAI adds later go to the upstream as given
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: JSONObject | None = None

    _schema = field_validator("parameters")(lambda schema: schema and valid_schema(schema))


class OpenAITool(BaseModel):
    model_config = _FORBID
    type: Literal["function"]
    function: OpenAIFunction


class OpenAINamedFunction(BaseModel):
    model_config = _FORBID
    name: str


class OpenAINamedTool(BaseModel):
    model_config = _FORBID
    type: Literal["function"]
    function: OpenAINamedFunction


class AnthropicThinkingConfig(BaseModel):
    """Anthropic's `thinking` (read in both dialects: see OpenAIChatRequest.thinking)."""

    model_config = _FORBID
    type: Literal["enabled", "disabled"]
    budget_tokens: int | None = Field(default=None, ge=1024)

    @model_validator(mode="after")
    def _budget_when_enabled(self) -> AnthropicThinkingConfig:
        if self.type == "enabled" and self.budget_tokens is None:
            raise ValueError("budget_tokens is required when thinking is enabled")
        return self


def thinking_budget(thinking: AnthropicThinkingConfig | None) -> int | None:
    if thinking is None or thinking.type != "enabled":
        return None
    return thinking.budget_tokens


class StreamOptions(BaseModel):
    model_config = _FORBID
    include_usage: bool = False


class OpenAIChatRequest(BaseModel):
    model_config = _FORBID
    model: str = Field(min_length=1, max_length=200, pattern=MODEL_NAME)
    messages: list[OpenAIMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    n: int | None = Field(default=None, ge=1, le=1)
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    seed: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    user: str | None = None
    service_tier: str | None = None
    response_format: JSONObject | None = None
    tools: list[OpenAITool] | None = None
    tool_choice: Literal["auto", "none", "required"] | OpenAINamedTool | None = None
    parallel_tool_calls: bool | None = None
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    store: bool | None = None  # accepted; tokenrelay stores nothing for OpenAI
    metadata: dict[str, str] | None = None  # accepted, with `store`
    # An extension (the SDK's `extra_body`), as Anthropic's own OpenAI-compatible endpoint
    # takes it: extended thinking from an Anthropic upstream, asked for in this dialect.
    thinking: AnthropicThinkingConfig | None = None

    def to_generation(self, model: str, request_id: str) -> GenerationRequest:
        fmt = self.response_format
        dumped = self.model_dump(exclude_none=True)
        stop = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return GenerationRequest(
            model=model,
            messages=openai_request.conversation(dumped["messages"]),
            max_tokens=self.max_completion_tokens or self.max_tokens,
            max_completion_tokens=self.max_completion_tokens is not None,
            response_format=fmt if fmt and fmt.get("type") != "text" else None,
            tools=openai_request.tools_in(dumped.get("tools")),
            tool_choice=openai_request.tool_choice_in(dumped.get("tool_choice")),
            stop=tuple(stop),
            thinking_budget=thinking_budget(self.thinking),
            **same_named(self),
            dialect="openai",
            extras=openai_request.extras_in(dumped.get("tools")),
            request_id=request_id,
        )


# ---------------------------------------------------------------- Anthropic


class AnthropicSource(BaseModel):
    model_config = _FORBID
    type: Literal["base64", "url", "text"]
    media_type: str | None = None
    data: str | None = None
    url: str | None = Field(default=None, pattern=r"^https?://")

    @model_validator(mode="after")
    def _what_its_type_needs(self) -> AnthropicSource:
        needs = {"base64": ("data", "media_type"), "url": ("url",), "text": ("data",)}
        missing = [name for name in needs[self.type] if not getattr(self, name)]
        if missing:
            raise ValueError(f"a {self.type} source needs {' and '.join(missing)}")
        return self


class AnthropicText(BaseModel):
    model_config = _ALLOW  # `cache_control`, `citations`: the upstream's business
    type: Literal["text"]
    text: str


class AnthropicImage(BaseModel):
    model_config = _ALLOW
    type: Literal["image"]
    source: AnthropicSource

    @model_validator(mode="after")
    def _not_text(self) -> AnthropicImage:
        if self.source.type == "text":
            raise ValueError("an image's source is base64 or url")
        return self


class AnthropicDocument(BaseModel):
    model_config = _ALLOW
    type: Literal["document"]
    source: AnthropicSource
    title: str | None = None


class AnthropicToolUse(BaseModel):
    model_config = _ALLOW
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: JSONObject


AnthropicResultPart = Annotated[AnthropicText | AnthropicImage, Field(discriminator="type")]


class AnthropicToolResult(BaseModel):
    model_config = _ALLOW
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[AnthropicResultPart] = ""
    is_error: bool = False


class AnthropicThinking(BaseModel):
    model_config = _FORBID
    type: Literal["thinking"]
    thinking: str
    signature: str


class AnthropicRedactedThinking(BaseModel):
    model_config = _FORBID
    type: Literal["redacted_thinking"]
    data: str


AnthropicBlock = Annotated[
    AnthropicText
    | AnthropicImage
    | AnthropicDocument
    | AnthropicToolUse
    | AnthropicToolResult
    | AnthropicThinking
    | AnthropicRedactedThinking,
    Field(discriminator="type"),
]


class AnthropicMessage(BaseModel):
    model_config = _FORBID
    role: Literal["user", "assistant"]
    content: str | list[AnthropicBlock] = Field(min_length=1)

    @model_validator(mode="after")
    def _blocks_fit_the_role(self) -> AnthropicMessage:
        kinds = {block.type for block in self.content} if isinstance(self.content, list) else set()
        misplaced = kinds & _ASSISTANT_ONLY if self.role == "user" else kinds & {"tool_result"}
        if misplaced:
            raise ValueError(f"a {self.role} turn cannot hold {', '.join(sorted(misplaced))}")
        return self


_ASSISTANT_ONLY = frozenset({"tool_use", "thinking", "redacted_thinking"})


class AnthropicTool(BaseModel):
    model_config = _ALLOW  # `cache_control`, `type` of server tools: the upstream's business
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    input_schema: JSONObject

    _schema = field_validator("input_schema")(valid_schema)


class AnthropicToolChoice(BaseModel):
    model_config = _FORBID
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None

    @model_validator(mode="after")
    def _fits_its_type(self) -> AnthropicToolChoice:
        if (self.type == "tool") != (self.name is not None):
            raise ValueError("name goes with type tool, and only with it")
        if self.type == "none" and self.disable_parallel_tool_use is not None:
            raise ValueError("disable_parallel_tool_use does not go with type none")
        return self


class AnthropicMetadata(BaseModel):
    model_config = _FORBID
    user_id: str | None = None


class AnthropicMessagesRequest(BaseModel):
    model_config = _FORBID
    model: str = Field(min_length=1, max_length=200, pattern=MODEL_NAME)
    messages: list[AnthropicMessage] = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    system: str | list[AnthropicText] | None = None
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1)
    stop_sequences: list[str] | None = None
    metadata: AnthropicMetadata | None = None
    service_tier: str | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: AnthropicToolChoice | None = None
    thinking: AnthropicThinkingConfig | None = None

    def to_generation(self, model: str, request_id: str) -> GenerationRequest:
        dumped = self.model_dump(exclude_none=True)
        choice, parallel = anthropic_request.tool_choice_in(dumped.get("tool_choice"))
        return GenerationRequest(
            model=model,
            messages=anthropic_request.conversation(dumped.get("system"), dumped["messages"]),
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            tools=anthropic_request.tools_in(dumped.get("tools")),
            tool_choice=choice,
            parallel_tool_calls=parallel,
            stop=tuple(self.stop_sequences or ()),
            top_p=self.top_p,
            top_k=self.top_k,
            user=self.metadata.user_id if self.metadata else None,
            service_tier=self.service_tier,
            thinking_budget=thinking_budget(self.thinking),
            dialect="anthropic",
            extras=anthropic_request.extras_in(
                dumped.get("system"), dumped["messages"], dumped.get("tools")
            ),
            request_id=request_id,
        )


# The parameters (GenerationRequest's names) as each dialect's caller named them.
OPENAI_NAMES = {"thinking_budget": "thinking"}
ANTHROPIC_NAMES = {
    "stop": "stop_sequences",
    "user": "metadata.user_id",
    "thinking_budget": "thinking",
    "parallel_tool_calls": "tool_choice.disable_parallel_tool_use",
}
NATIVE_NAMES: dict[str, str] = {}


def validate_compat(model: type[M], data: Any, max_tokens_limit: int) -> M:
    if not isinstance(data, dict):
        raise InvalidRequest([FieldProblem("body", "must be a JSON object")])
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(problems_of(exc)) from None
    for name in ("max_completion_tokens", "max_tokens"):  # as the caller named it
        limit = getattr(parsed, name, None)
        if isinstance(limit, int) and limit > max_tokens_limit:
            raise InvalidRequest([FieldProblem(name, f"must be at most {max_tokens_limit}")])
    return parsed
