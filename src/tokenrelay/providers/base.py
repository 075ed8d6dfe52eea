"""The one thing a provider implements, and the types it speaks.

Contract of `Provider.stream(request)`:

- It is an async generator of `Delta`, pulled by the stream's producer task, one step per
  delta. The caller iterates it inside `contextlib.aclosing`, so the generator's `finally`
  runs on every exit path; that is where the upstream response is closed.
- Cancelling the task that iterates it (at any await, including before the first delta) or
  calling `aclose()` must close the upstream promptly: that is how a Stop reaches the bill.
- It raises only `GenerationError` subclasses (rate limit, timeout, ...). Anything else is a bug
  and is reported to the client as `internal_error`, with the details only in the log.
- At most one delta carries `finish_reason`, and nothing text-bearing comes after it. `usage`
  may arrive on any delta; the last one seen wins.
- Timeouts between deltas are the caller's job (the Stream holds one deadline per stream), so a
  provider needs no timer of its own for "first token" or "stalled".

`continuation(request, partial, produced)` builds the request that carries on an answer cut
short after `partial` (opt-in recovery, `on_upstream_error: "continue"`). The default suits any
OpenAI-compatible server: the partial answer as an assistant turn, then a user turn asking to
continue. Providers with a native assistant prefill (Anthropic, sim) override it.

`aclose()` releases what the provider pools (HTTP clients); it is safe to call twice.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, NamedTuple

from tokenrelay._types import JSONObject
from tokenrelay.providers.content import Message, Tool, ToolChoice


@dataclass(frozen=True, slots=True)
class Usage:
    """The upstream's count. The details are None where the upstream said nothing of them."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None = None  # prompt tokens read from a cache
    cache_creation_tokens: int | None = None  # prompt tokens written to a cache (Anthropic)
    reasoning_tokens: int | None = None  # completion tokens spent reasoning

    def as_dict(self) -> dict[str, Any]:
        """Our usage object (the native API's `usage`; OpenAI's names for the details)."""
        totals: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }
        if self.cached_tokens is not None:
            totals["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        if self.cache_creation_tokens is not None:
            totals["cache_creation_input_tokens"] = self.cache_creation_tokens
        if self.reasoning_tokens is not None:
            totals["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return totals


class ToolDelta(NamedTuple):
    """A piece of tool call `position` (0, 1, ... in the order the calls began): its first piece
    carries the id and the name; every piece may carry a fragment of the arguments' JSON.
    `done` ends the call before the answer does (Anthropic ends each block)."""

    position: int
    id: str = ""
    name: str = ""
    arguments: str = ""
    done: bool = False


class Delta(NamedTuple):
    """What a provider yields: text, reasoning, a piece of a tool call, a finish reason,
    usage, or several. A named tuple, built once per token (see `sse.ServerSentEvent`)."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    reasoning: str = ""  # a piece of the model's reasoning (thinking) text
    signature: str = ""  # the signature that closes a reasoning block (Anthropic)
    redacted: str = ""  # a redacted reasoning block's opaque data (Anthropic)
    tool: ToolDelta | None = None
    logprobs: list[Any] | None = None  # the text's tokens' log probabilities, OpenAI's entries


# Parameter values that ask for nothing: the API's own defaults.
NEUTRAL_VALUES: dict[str, object] = {
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "logprobs": False,
    "top_logprobs": 0,
}
_NO_NEUTRAL = object()


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """What a provider needs to know, with the provider prefix already stripped from `model`.

    The sampling and control parameters are named as OpenAI's API names them, but for
    `top_k` and `thinking_budget` (Anthropic's `thinking.budget_tokens`); `PARAMETERS` lists
    them. A provider refuses, by name, the ones it cannot honour (`Provider.unsupported`).
    """

    model: str
    messages: tuple[Message, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    response_format: JSONObject | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    stop: tuple[str, ...] = ()
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    user: str | None = None
    service_tier: str | None = None
    reasoning_effort: str | None = None
    thinking_budget: int | None = None
    # The caller named the limit `max_completion_tokens` (OpenAI's newer name): an
    # OpenAI-compatible upstream is sent that name too.
    max_completion_tokens: bool = False
    # The dialect the caller spoke ("openai", "anthropic"; "" for the native API), and where
    # it put keys of that dialect's own (content.py's `extra`), as the caller named them:
    # "system[0].cache_control", "tools[1].function.strict".
    dialect: str = ""
    extras: tuple[str, ...] = ()
    request_id: str = field(default="", compare=False)

    def given(self) -> set[str]:
        """The names of the parameters this request sets (of `PARAMETERS`)."""
        return {name for name in PARAMETERS if getattr(self, name) not in (None, ())}

    @property
    def prompt_text(self) -> str:
        return "\n".join(m.text for m in self.messages)

    @property
    def estimated_prompt_tokens(self) -> int:
        """A rough prompt size (four characters a token) for when no upstream has counted."""
        return max(1, len(self.prompt_text) // 4) if self.messages else 0

    @property
    def last_user_text(self) -> str:
        return next((m.text for m in reversed(self.messages) if m.role == "user"), "")


# The parameters a provider may refuse, by their GenerationRequest names.
PARAMETERS: tuple[str, ...] = tuple(
    f.name
    for f in fields(GenerationRequest)
    if f.name
    not in (
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "dialect",
        "extras",
        "request_id",
    )
)


CONTINUE_PROMPT = (
    "Your previous answer was cut off. Continue it exactly where it stopped: no preamble, "
    "and do not repeat anything already written."
)


@dataclass(frozen=True, slots=True)
class Continuation:
    request: GenerationRequest
    overlap: str = ""  # text already delivered that the continuation will likely repeat first


def prefill_continuation(request: GenerationRequest, partial: str, produced: int) -> Continuation:
    """Continue by prefilling the assistant turn (APIs reject trailing whitespace there)."""
    trimmed = partial.rstrip()
    messages = (*request.messages, Message("assistant", trimmed))
    return Continuation(_remaining(request, messages, produced), partial[len(trimmed) :])


def _remaining(
    request: GenerationRequest, messages: tuple[Message, ...], produced: int
) -> GenerationRequest:
    left = max(1, request.max_tokens - produced) if request.max_tokens else None
    return replace(request, messages=messages, max_tokens=left)


class Provider(ABC):
    name: str

    @abstractmethod
    def models(self) -> list[str]:
        """Model names to list (without the provider prefix)."""

    def supports(self, model: str) -> bool:
        """Whether `model` is served; providers with open-ended names override this."""
        return model in self.models()

    @abstractmethod
    def stream(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        """Generate; see the module docstring for the contract."""

    # The GenerationRequest parameters (of PARAMETERS) this provider honours.
    supported: ClassVar[frozenset[str]] = frozenset()

    def unsupported(self, request: GenerationRequest) -> set[str]:
        """The parameters `request` sets that this provider cannot honour: refused by name
        before anything starts, never dropped silently. One set to the value that changes
        nothing (`presence_penalty: 0`, `logprobs: false`, as clients send by default) is
        honoured by leaving it out."""
        return {
            name
            for name in request.given() - self.supported
            if getattr(request, name) != NEUTRAL_VALUES.get(name, _NO_NEUTRAL)
        }

    def continuation(self, request: GenerationRequest, partial: str, produced: int) -> Continuation:
        """The request that continues an answer cut short after `partial` (see module doc)."""
        turns = (Message("assistant", partial), Message("user", CONTINUE_PROMPT))
        return Continuation(_remaining(request, (*request.messages, *turns), produced))

    async def aclose(self) -> None:  # noqa: B027 - a provider with nothing pooled needs nothing
        """Release pooled resources. Safe to call twice."""
