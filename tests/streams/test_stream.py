"""The producer: exactly one terminal event, cancel in every phase, deadlines, limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

import pytest

from tests.realserver import MockUpstream
from tokenrelay.errors import RateLimited
from tokenrelay.events import Event
from tokenrelay.providers.base import Delta, GenerationRequest, Provider, ToolDelta, Usage
from tokenrelay.providers.content import Message
from tokenrelay.providers.openai import OpenAIProvider
from tokenrelay.providers.sim import SimProvider
from tokenrelay.settings import StreamsSection, UpstreamSection
from tokenrelay.shaping.shaper import Shaping
from tokenrelay.streams.log import StreamMeta
from tokenrelay.streams.log_memory import MemoryStreamLog
from tokenrelay.streams.stream import SHUTDOWN, Stream

pytestmark = pytest.mark.anyio


class ScriptedProvider(Provider):
    """Yields its script; records whether its generator was closed (the upstream 'closed')."""

    name = "scripted"

    def __init__(self, script: list[Delta | float | Exception]) -> None:
        self.script = script
        self.closed = asyncio.Event()

    def models(self) -> list[str]:
        return ["m"]

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        try:
            for step in self.script:
                if isinstance(step, float):
                    await asyncio.sleep(step)
                elif isinstance(step, Exception):
                    raise step
                else:
                    yield step
        finally:
            self.closed.set()


async def _run(provider: Provider, model: str = "m", **kw: float) -> tuple[list[Event], Stream]:
    log = MemoryStreamLog(max_bytes=int(kw.pop("max_bytes", 1 << 20)), ttl=60.0)
    await log.create("str_t", StreamMeta("str_t", model))
    request = GenerationRequest(model, (Message("user", "hello"),))
    timeouts = {f"{name}_timeout": value for name, value in kw.items()}
    limits = StreamsSection.model_validate({"max_retries": 0, **timeouts})
    stream = Stream("str_t", f"x/{model}", provider, request, log, limits)
    await stream.run()
    return await log.read("str_t", 0, wait=0), stream


NO_RETRIES = StreamsSection(max_retries=0)


def _types(events: list[Event]) -> list[str]:
    return [e.type for e in events]


async def test_done_carries_the_figures() -> None:
    events, _ = await _run(
        ScriptedProvider([Delta("Hel"), 0.01, Delta("lo"), Delta(finish_reason="stop")])
    )
    assert _types(events) == ["start", "token", "token", "done"]
    assert [e.seq for e in events] == [1, 2, 3, 4]
    done = events[-1].payload()
    assert done["finish_reason"] == "stop"
    assert done["token_count"] == 2
    assert done["ttft_ms"] >= 0
    assert done["elapsed_seconds"] >= 0.01
    assert done["tokens_per_second"] > 0
    assert events[0].payload() == {"type": "start", "stream_id": "str_t", "model": "x/m"}


async def test_provider_error_becomes_one_error_event() -> None:
    events, _ = await _run(ScriptedProvider([Delta("a"), RateLimited("upstream said 429 secret")]))
    assert _types(events) == ["start", "token", "error"]
    error = events[-1].payload()
    assert error["error_type"] == "rate_limit"
    assert error["retryable"] is True
    assert "secret" not in error["message"]  # from the table, never str(exc)


async def test_unexpected_exception_is_an_internal_error_without_details() -> None:
    events, _ = await _run(ScriptedProvider([RuntimeError("password=hunter2")]))
    assert _types(events) == ["start", "error"]
    assert events[-1].payload()["error_type"] == "internal_error"
    assert b"hunter2" not in events[-1].data


async def test_no_first_token_in_time_is_a_timeout() -> None:
    provider = ScriptedProvider([5.0, Delta("late")])
    events, _ = await _run(provider, first_token=0.05)
    assert events[-1].payload()["error_type"] == "timeout"
    assert provider.closed.is_set()


@pytest.fixture(params=["sim", "openai"])
async def generator(request: pytest.FixtureRequest, mock: MockUpstream) -> AsyncIterator[Provider]:
    """The sim, or an OpenAI upstream over HTTP: deadlines and the log's cap hold either way."""
    made: Provider = SimProvider()
    if request.param == "openai":
        made = OpenAIProvider("openai", UpstreamSection(base_url=f"{mock.url}/v1"), None)
    yield made
    await made.aclose()


async def test_done_carries_the_upstream_usage(generator: Provider) -> None:
    events, _ = await _run(generator, "fast")
    done = events[-1].payload()
    assert done["finish_reason"] == "stop"
    assert done["usage"]["completion_tokens"] == done["token_count"] == len(events) - 2


async def test_stall_after_tokens_is_stalled(generator: Provider) -> None:
    events, _ = await _run(generator, "fast+stall-after-3", idle=0.05)
    assert _types(events) == ["start", "token", "token", "token", "error"]
    assert events[-1].payload()["error_type"] == "stalled"


async def test_answer_past_the_log_cap_ends_with_too_large(generator: Provider) -> None:
    events, _ = await _run(generator, "fast+endless", max_bytes=2000)
    assert events[-1].payload()["error_type"] == "too_large"
    assert sum(len(e.data) for e in events[:-1]) <= 2000


@pytest.mark.parametrize("phase", ["before_first_token", "mid_stream"])
async def test_cancel_closes_the_upstream_and_ends_cancelled(phase: str) -> None:
    script: list[Delta | float | Exception] = (
        [30.0] if phase == "before_first_token" else [Delta("a"), 30.0]
    )
    provider = ScriptedProvider(script)
    log = MemoryStreamLog(max_bytes=1 << 20, ttl=60.0)
    await log.create("str_t", StreamMeta("str_t", "m"))
    stream = Stream("str_t", "x/m", provider, GenerationRequest("m", ()), log, NO_RETRIES)
    task = asyncio.create_task(stream.run())
    await asyncio.sleep(0.02)
    stream.cancel_reason = "client_disconnected"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert provider.closed.is_set()
    events = await log.read("str_t", 0, wait=0)
    ending = events[-1].payload()
    assert ending["type"] == "cancelled"
    assert ending["reason"] == "client_disconnected"
    tokens = 1 if phase == "mid_stream" else 0
    assert ending["usage"] == {
        "prompt_tokens": 0,
        "completion_tokens": tokens,
        "total_tokens": tokens,
        "estimated": ["prompt_tokens", "completion_tokens", "total_tokens"],
    }
    assert sum(e.terminal for e in events) == 1


async def test_cancel_for_shutdown_is_a_retryable_error() -> None:
    log = MemoryStreamLog(max_bytes=1 << 20, ttl=60.0)
    await log.create("str_t", StreamMeta("str_t", "m"))
    provider = ScriptedProvider([30.0])
    stream = Stream("str_t", "x/m", provider, GenerationRequest("m", ()), log, NO_RETRIES)
    task = asyncio.create_task(stream.run())
    await asyncio.sleep(0.01)
    stream.cancel_reason = SHUTDOWN
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    ending = (await log.read("str_t", 0, wait=0))[-1].payload()
    assert ending["error_type"] == "server_shutdown"
    assert ending["retryable"] is True


async def test_the_prompts_count_before_the_answer_is_no_sign_of_the_answer() -> None:
    """Regression: Anthropic's message_start (a usage delta at once) counted as a sign of
    life, so the idle deadline replaced the first-token deadline before any content."""
    script: list[Delta | float | Exception] = [
        Delta(usage=Usage(9, 1)),
        0.3,  # thinking before the first word: past idle_timeout, within first_token_timeout
        Delta("Hi"),
        Delta(finish_reason="stop", usage=Usage(9, 1)),
    ]
    events, _ = await _run(ScriptedProvider(script), first_token=5.0, idle=0.1)
    assert _types(events) == ["start", "usage", "token", "done"]


async def test_held_words_go_out_before_a_tool_call() -> None:
    """Regression: with word chunking the last word was held past the call's events."""
    log = MemoryStreamLog(max_bytes=1 << 20, ttl=60.0)
    await log.create("str_t", StreamMeta("str_t", "m"))
    script: list[Delta | float | Exception] = [
        Delta("Let me "),
        Delta("check"),  # a word not yet ended: held
        Delta(tool=ToolDelta(0, "call_1", "f", '{"a": 1}')),
        Delta(finish_reason="tool_calls"),
    ]
    request = GenerationRequest("m", (Message("user", "hello"),))
    shaping = Shaping(chunking="word", max_hold=10.0)
    provider = ScriptedProvider(script)
    stream = Stream("str_t", "x/m", provider, request, log, NO_RETRIES, shaping=shaping)
    await stream.run()
    events = await log.read("str_t", 0, wait=0)
    kinds = _types(events)
    first_call = kinds.index("tool_call")
    assert "token" not in kinds[first_call:]  # every word went out before the call
    assert kinds[first_call:] == ["tool_call", "tool_call", "tool_call", "done"]
    text = "".join(e.payload()["content"] for e in events if e.type == "token")
    assert text == "Let me check"


async def test_an_answer_with_calls_ends_with_tool_calls_whatever_the_server_said() -> None:
    script: list[Delta | float | Exception] = [
        Delta(tool=ToolDelta(0, "call_1", "f", "{}")),
        Delta(finish_reason="stop"),  # as Ollama and vLLM end one
    ]
    events, _ = await _run(ScriptedProvider(script))
    assert events[-1].payload()["finish_reason"] == "tool_calls"
