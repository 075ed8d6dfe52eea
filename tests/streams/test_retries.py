"""Retries before the first token, never after; backoff honours Retry-After; total deadline."""

from __future__ import annotations

import pytest

from tests.streams.test_stream import ScriptedProvider, _types
from tokenrelay.errors import NetworkError, Overloaded, RateLimited, UpstreamRejected
from tokenrelay.providers.base import Delta, GenerationRequest
from tokenrelay.providers.content import Message
from tokenrelay.settings import StreamsSection
from tokenrelay.streams.log import StreamMeta
from tokenrelay.streams.log_memory import MemoryStreamLog
from tokenrelay.streams.stream import Stream, retry_delay

pytestmark = pytest.mark.anyio


class FlakyProvider(ScriptedProvider):
    """Fails with the given errors, one per attempt, then succeeds."""

    def __init__(self, failures: list[Exception], then: list[Delta | float | Exception]) -> None:
        super().__init__(then)
        self.failures = failures
        self.attempts = 0

    async def stream(self, request: GenerationRequest):  # type: ignore[no-untyped-def]
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        async for delta in super().stream(request):
            yield delta


async def _run(provider: ScriptedProvider, retries: int = 2, **deadlines: float):  # type: ignore[no-untyped-def]
    log = MemoryStreamLog(max_bytes=1 << 20, ttl=60.0)
    await log.create("str_r", StreamMeta("str_r", "m"))
    timeouts = {f"{name}_timeout": value for name, value in deadlines.items()}
    retrying = {"max_retries": retries, "retry_base_delay": 0.001, "max_retry_after": 0.05}
    limits = StreamsSection.model_validate({**retrying, **timeouts})
    request = GenerationRequest("m", (Message("user", "hi"),))
    stream = Stream("str_r", "x/m", provider, request, log, limits)
    await stream.run()
    return await log.read("str_r", 0, wait=0)


async def test_retryable_failures_before_the_first_token_are_retried() -> None:
    provider = FlakyProvider(
        [RateLimited("429", retry_after=0.01), NetworkError("reset")],
        [Delta("ok"), Delta(finish_reason="stop")],
    )
    events = await _run(provider)
    assert provider.attempts == 3
    assert _types(events) == ["start", "status", "status", "token", "done"]
    assert "rate_limit" in events[1].payload()["message"]
    assert "attempt 2 of 3" in events[1].payload()["message"]


async def test_gives_up_after_max_retries_with_the_last_error() -> None:
    provider = FlakyProvider([Overloaded(), Overloaded(), Overloaded()], [])
    events = await _run(provider)
    assert provider.attempts == 3
    assert _types(events) == ["start", "status", "status", "error"]
    assert events[-1].payload()["error_type"] == "overloaded"


async def test_non_retryable_failures_are_not_retried() -> None:
    provider = FlakyProvider([UpstreamRejected("401")], [Delta("never")])
    events = await _run(provider)
    assert provider.attempts == 1
    assert _types(events) == ["start", "error"]
    assert events[-1].payload()["retryable"] is False


async def test_nothing_is_retried_after_the_first_token() -> None:
    provider = FlakyProvider([], [Delta("partial"), NetworkError("reset")])
    events = await _run(provider)
    assert provider.attempts == 1
    assert _types(events) == ["start", "token", "error"]
    assert events[-1].payload()["error_type"] == "network_error"


async def test_rate_limit_error_carries_retry_after() -> None:
    provider = FlakyProvider([RateLimited(retry_after=7.0)], [])
    events = await _run(provider, retries=0)
    assert events[-1].payload()["retry_after"] == 7.0


async def test_total_deadline_ends_a_slow_stream() -> None:
    provider = ScriptedProvider([Delta("a"), 0.02, Delta("b"), 0.02, Delta("c"), 5.0])
    events = await _run(provider, total=0.1, idle=10.0)
    assert _types(events)[-1] == "error"
    assert events[-1].payload()["error_type"] == "timeout"


@pytest.mark.parametrize("attempt", [0, 1, 2, 5])
def test_backoff_is_full_jitter_under_an_exponential_ceiling(attempt: int) -> None:
    limits = StreamsSection(retry_base_delay=0.5)
    delays = [retry_delay(limits, attempt, None) for _ in range(200)]
    assert all(0 <= d <= 0.5 * 2**attempt for d in delays)
    assert len(set(delays)) > 100  # jittered, not a fixed schedule


def test_backoff_never_undercuts_retry_after_but_caps_it() -> None:
    limits = StreamsSection(retry_base_delay=0.01, max_retry_after=3.0)
    assert retry_delay(limits, 0, 2.0) >= 2.0
    assert retry_delay(limits, 0, 3600.0) == 3.0
