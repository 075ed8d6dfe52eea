"""The one thing a provider implements, and the types it speaks.

Contract of `Provider.stream(request)`:

- It is an async generator of `Delta`. The caller iterates it inside `contextlib.aclosing`, so
  the generator's `finally` runs on every exit path; that is where the upstream response is closed.
- Cancelling the task that iterates it (at any await, including before the first delta) or
  calling `aclose()` must close the upstream promptly: that is how a Stop reaches the bill.
- It raises only `GenerationError` subclasses (rate limit, timeout, ...). Anything else is a bug
  and is reported to the client as `internal_error`, with the details only in the log.
- At most one delta carries `finish_reason`, and nothing text-bearing comes after it. `usage`
  may arrive on any delta; the last one seen wins.
- Timeouts between deltas are the caller's job (the Stream holds one deadline per stream), so a
  provider needs no timer of its own for "first token" or "stalled".

`aclose()` releases what the provider pools (HTTP clients); it is safe to call twice.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from tokenrelay._types import JSONObject, Role


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


@dataclass(frozen=True, slots=True)
class Delta:
    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """What a provider needs to know, with the provider prefix already stripped from `model`."""

    model: str
    messages: tuple[Message, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    response_format: JSONObject | None = None
    request_id: str = field(default="", compare=False)

    @property
    def prompt_text(self) -> str:
        return "\n".join(m.content for m in self.messages)

    @property
    def last_user_text(self) -> str:
        return next((m.content for m in reversed(self.messages) if m.role == "user"), "")


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

    async def aclose(self) -> None:  # noqa: B027 - a provider with nothing pooled needs nothing
        """Release pooled resources. Safe to call twice."""
