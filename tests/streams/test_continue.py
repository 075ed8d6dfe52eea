"""Opt-in mid-stream recovery: a cut answer is continued, and the client sees one answer."""

from __future__ import annotations

import pytest

from tests.realserver import MockUpstream
from tokenrelay.events import Event
from tokenrelay.providers.anthropic import AnthropicProvider
from tokenrelay.providers.base import (
    CONTINUE_PROMPT,
    GenerationRequest,
    Provider,
    prefill_continuation,
)
from tokenrelay.providers.content import Message
from tokenrelay.providers.openai import OpenAIProvider
from tokenrelay.providers.sim import SimProvider
from tokenrelay.providers.sim_text import compose_answer, tokenize
from tokenrelay.settings import StreamsSection, UpstreamSection
from tokenrelay.streams.log import StreamMeta
from tokenrelay.streams.log_memory import MemoryStreamLog
from tokenrelay.streams.stream import Stream

pytestmark = pytest.mark.anyio
QUESTION = "Explain TCP handshakes"


async def _run(provider: Provider, model: str, *, continue_on_error: bool) -> list[Event]:
    log = MemoryStreamLog(max_bytes=1 << 20, ttl=60.0)
    await log.create("str_c", StreamMeta("str_c", model))
    request = GenerationRequest(model, (Message("user", QUESTION),))
    stream = Stream(
        "str_c",
        model,
        provider,
        request,
        log,
        StreamsSection(max_retries=2, retry_base_delay=0.001),
        continue_on_error=continue_on_error,
    )
    await stream.run()
    return await log.read("str_c", 0, wait=0)


def _text(events: list[Event]) -> str:
    return "".join(e.payload()["content"] for e in events if e.type == "token")


@pytest.mark.parametrize("kind", ["sim", "openai", "anthropic"])
async def test_a_reset_mid_answer_is_continued_into_one_answer(
    kind: str, mock: MockUpstream
) -> None:
    provider: Provider
    if kind == "sim":
        provider = SimProvider()
    elif kind == "openai":
        provider = OpenAIProvider("openai", UpstreamSection(base_url=f"{mock.url}/v1"), None)
    else:
        provider = AnthropicProvider("anthropic", UpstreamSection(base_url=mock.url), None)
    events = await _run(provider, "fast+reset-after-12", continue_on_error=True)
    await provider.aclose()
    types = [e.type for e in events]
    assert types[-1] == "done"
    assert types.count("status") == 1
    assert "continuing the answer" in events[types.index("status")].payload()["message"]
    assert _text(events) == compose_answer(QUESTION)  # nothing lost, nothing doubled
    # One upstream count cannot cover two attempts: every figure is ours.
    estimated = events[-1].payload()["usage"]["estimated"]
    assert estimated == ["prompt_tokens", "completion_tokens", "total_tokens"]


async def test_without_continue_the_cut_answer_ends_with_error() -> None:
    events = await _run(SimProvider(), "fast+reset-after-12", continue_on_error=False)
    assert [e.type for e in events][-1] == "error"
    assert len(_text(events)) < len(compose_answer(QUESTION))


async def test_trailing_whitespace_trimmed_for_the_prefill_is_not_sent_twice() -> None:
    """Prefills must not end in whitespace; what was trimmed is dropped from the continuation."""
    tokens = tokenize(compose_answer(QUESTION), f"{QUESTION}")
    cut = next(i for i, t in enumerate(tokens) if t.endswith("\n")) + 1
    events = await _run(SimProvider(), f"fast+reset-after-{cut}", continue_on_error=True)
    assert _text(events) == compose_answer(QUESTION)


def test_prefill_continuation_trims_and_reports_the_overlap() -> None:
    request = GenerationRequest("m", (Message("user", "q"),), max_tokens=100)
    continuation = prefill_continuation(request, "Hello world.\n\n", produced=4)
    assert continuation.request.messages[-1] == Message("assistant", "Hello world.")
    assert continuation.overlap == "\n\n"
    assert continuation.request.max_tokens == 96


def test_default_continuation_asks_to_continue() -> None:
    request = GenerationRequest("m", (Message("user", "q"),))
    continuation = OpenAIProvider(
        "x", UpstreamSection(base_url="http://127.0.0.1:1"), None
    ).continuation(request, "Hello", produced=1)
    assert continuation.request.messages[-2:] == (
        Message("assistant", "Hello"),
        Message("user", CONTINUE_PROMPT),
    )
    assert continuation.overlap == ""
