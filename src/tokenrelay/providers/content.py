"""The conversation a provider is given, in one form whatever dialect it arrived in.

A message's content is text, or a tuple of parts (text, images, documents). An assistant turn
may carry the reasoning it showed (`Thinking`, with Anthropic's signature kept byte for byte,
so that multi-turn tool use with thinking works) and the tool calls it made. A tool's result
is a message of its own, with the role `tool`, as OpenAI's API has it; Anthropic's
`tool_result` blocks become such messages and back (wire/anthropic.py).

Images and documents are passed on as given, by URL (`https:` or `data:`) or as base64 data.
tokenrelay never fetches a URL itself: the upstream does, or refuses.

`extra` holds what a dialect adds to a block or a tool that the model here has no name for
(Anthropic's `cache_control` and `citations`, OpenAI's `strict`), exactly as the caller sent
it. It goes back out to an upstream of the same dialect; `GenerationRequest.extras` lists
where the caller put each key, so another dialect's upstream can refuse it by that name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tokenrelay._types import JSONObject, Role


def _none() -> JSONObject:
    return {}


@dataclass(frozen=True, slots=True)
class Text:
    text: str
    extra: JSONObject = field(default_factory=_none)


@dataclass(frozen=True, slots=True)
class Image:
    url: str = ""  # an https: or data: URL
    data: str = ""  # base64, with media_type
    media_type: str = ""
    detail: str = ""  # OpenAI's "low", "high" or "auto"; "" for the upstream's default
    extra: JSONObject = field(default_factory=_none)


@dataclass(frozen=True, slots=True)
class Document:
    url: str = ""  # an https: URL (Anthropic's url source)
    data: str = ""  # base64, with media_type (a PDF)
    media_type: str = ""
    text: str = ""  # a plain-text document
    title: str = ""
    extra: JSONObject = field(default_factory=_none)


Part = Text | Image | Document


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # the JSON text, as the model produced it
    extra: JSONObject = field(default_factory=_none)


@dataclass(frozen=True, slots=True)
class Thinking:
    """One block of reasoning an assistant turn showed: its text and signature, or, for a
    block the upstream redacted, its opaque data."""

    text: str = ""
    signature: str = ""
    redacted: str = ""


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str | tuple[Part, ...] = ""
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant turn's calls
    thinking: tuple[Thinking, ...] = ()  # an assistant turn's reasoning, before its content
    tool_call_id: str = ""  # a tool message: the call it answers
    is_error: bool = False  # a tool message: the tool failed
    extra: JSONObject = field(default_factory=_none)  # a tool message: its result block's
    # Where the caller put this message, to name it in a refusal ("messages[3].content[1]"
    # for an Anthropic tool_result block); "" when it has no place of its own.
    origin: str = field(default="", compare=False)

    @property
    def parts(self) -> tuple[Part, ...]:
        if isinstance(self.content, str):
            return (Text(self.content),) if self.content else ()
        return self.content

    @property
    def text(self) -> str:
        """The text parts, joined: what the sim reads, and what estimates are made from."""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, Text))


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str = ""
    parameters: JSONObject = field(default_factory=lambda: {"type": "object", "properties": {}})
    extra: JSONObject = field(default_factory=_none)


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """auto: the model decides; none: no calls; required: at least one; tool: that one."""

    mode: Literal["auto", "none", "required", "tool"]
    name: str = ""  # mode "tool"
