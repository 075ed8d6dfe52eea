"""One provider suite, run on sim, openai and anthropic (the latter two over real HTTP)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

import orjson
import pytest

from tests.realserver import MockUpstream
from tokenrelay.errors import GenerationError
from tokenrelay.providers.anthropic import AnthropicProvider
from tokenrelay.providers.base import Delta, GenerationRequest, Provider
from tokenrelay.providers.content import Message
from tokenrelay.providers.openai import OpenAIProvider
from tokenrelay.providers.sim import SimProvider, SimTiming
from tokenrelay.providers.sim_text import compose_answer
from tokenrelay.settings import UpstreamSection

pytestmark = pytest.mark.anyio

KINDS = ["sim", "openai", "anthropic"]
UPSTREAMS = ["openai", "anthropic"]


def _upstream(mock: MockUpstream, kind: str) -> Provider:
    if kind == "openai":
        section = UpstreamSection(kind="openai", base_url=f"{mock.url}/v1")
        return OpenAIProvider("openai", section, "sk-test-openai")
    section = UpstreamSection(kind="anthropic", base_url=mock.url)
    return AnthropicProvider("anthropic", section, "sk-test-anthropic")


@pytest.fixture(params=KINDS)
async def provider(request: pytest.FixtureRequest, mock: MockUpstream) -> AsyncIterator[Provider]:
    made: Provider
    if request.param == "sim":
        made = SimProvider(SimTiming(ttft=0.02, tokens_per_second=400.0))
    else:
        made = _upstream(mock, request.param)
    yield made
    await made.aclose()


def _request(model: str, text: str = "Explain TCP handshakes", **kw: object) -> GenerationRequest:
    messages = (Message("system", "Be brief."), Message("user", text))
    return GenerationRequest(model, messages, **kw)  # type: ignore[arg-type]


async def _consume(
    provider: Provider, request: GenerationRequest, seen: list[Delta], on_each: Callable[[], None]
) -> None:
    async with aclosing(provider.stream(request)) as deltas:
        async for delta in deltas:
            seen.append(delta)
            on_each()


async def _collect(provider: Provider, request: GenerationRequest) -> list[Delta]:
    seen: list[Delta] = []
    await _consume(provider, request, seen, lambda: None)
    return seen


async def test_streams_the_answer_with_finish_and_usage(provider: Provider) -> None:
    deltas = await _collect(provider, _request("fast"))
    text = "".join(d.text for d in deltas)
    assert text == compose_answer("Explain TCP handshakes")
    finishes = [d.finish_reason for d in deltas if d.finish_reason]
    assert finishes == ["stop"]
    usage = [d.usage for d in deltas if d.usage][-1]
    assert usage is not None
    assert usage.completion_tokens == sum(1 for d in deltas if d.text)


async def test_json_schema_answers_are_json_that_follows_it(provider: Provider) -> None:
    # OpenAI-compatible upstreams get `response_format`; Anthropic a forced tool whose input
    # streams as input_json_delta (wire.anthropic.json_tool). Either way: JSON text, "stop".
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema}}
    deltas = await _collect(provider, _request("fast", response_format=fmt))
    value = orjson.loads("".join(d.text for d in deltas))
    assert isinstance(value["city"], str)
    assert isinstance(value["population"], int)
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["stop"]


async def test_max_tokens_gives_length(provider: Provider) -> None:
    deltas = await _collect(provider, _request("fast", max_tokens=5))
    assert sum(1 for d in deltas if d.text) == 5
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["length"]


@pytest.mark.parametrize(
    ("model", "error_type", "tokens"),
    [
        ("fast+error-after-3", "api_error", 3),
        ("fast+reset-after-2", "network_error", 2),
        ("fast+content-filter-after-4", "content_filter", 4),
        ("fast+rate-limit", "rate_limit", 0),
    ],
)
async def test_faults_map_to_error_types(
    provider: Provider, model: str, error_type: str, tokens: int
) -> None:
    seen: list[Delta] = []
    with pytest.raises(GenerationError) as caught:
        await _consume(provider, _request(model), seen, lambda: None)
    assert caught.value.error_type == error_type
    assert sum(1 for d in seen if d.text) == tokens


@pytest.mark.parametrize("kind", UPSTREAMS)
@pytest.mark.parametrize(
    ("status", "error_type", "retryable"),
    [
        (302, "api_error", False),  # not followed: the Location is another host
        (400, "upstream_rejected", False),
        (401, "api_error", False),
        (429, "rate_limit", True),
        (500, "api_error", True),
        (503, "overloaded", True),
        (529, "overloaded", True),
    ],
)
async def test_http_statuses_map_to_error_types(
    mock: MockUpstream,
    kind: str,
    status: int,
    error_type: str,
    retryable: bool,
) -> None:
    provider = _upstream(mock, kind)
    with pytest.raises(GenerationError) as caught:
        await _collect(provider, _request(f"fast+status-{status}+leak-secret"))
    await provider.aclose()
    assert caught.value.error_type == error_type
    assert caught.value.retryable is retryable
    assert "SECRET" not in str(caught.value)
    if status == 429:
        assert caught.value.retry_after == 1.0


@pytest.mark.parametrize("kind", UPSTREAMS)
@pytest.mark.parametrize("phase", ["waiting_for_first_token", "mid_stream"])
async def test_cancel_closes_the_upstream_connection(
    mock: MockUpstream, kind: str, phase: str
) -> None:
    """The mock records when its client went away: that is the upstream bill stopping."""
    provider = _upstream(mock, kind)
    model = "slow-start" if phase == "waiting_for_first_token" else "default+endless"
    started = asyncio.Event()

    task = asyncio.create_task(_consume(provider, _request(model), [], started.set))
    if phase == "mid_stream":
        await asyncio.wait_for(started.wait(), 5)
    else:
        await asyncio.sleep(0.3)
    cancelled_at = time.time()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    for _ in range(100):
        last = mock.last()
        if last["outcome"] == "client_gone":
            break
        await asyncio.sleep(0.02)
    await provider.aclose()
    assert last["model"] == model
    assert last["outcome"] == "client_gone"
    gone_at = last["client_gone_at"]
    assert isinstance(gone_at, float)
    assert gone_at - cancelled_at < 1.0  # loose: a test, not a benchmark


async def test_api_keys_are_sent_as_each_provider_expects(mock: MockUpstream) -> None:
    """The key goes in the header each API reads; it is never part of a request body."""
    openai = _upstream(mock, "openai")
    anthropic = _upstream(mock, "anthropic")
    assert isinstance(openai, OpenAIProvider)
    assert isinstance(anthropic, AnthropicProvider)
    assert openai._client._headers["authorization"] == "Bearer sk-test-openai"
    assert anthropic._client._headers["x-api-key"] == "sk-test-anthropic"
    assert anthropic._client._headers["anthropic-version"] == "2023-06-01"
    assert "sk-test" not in orjson.dumps(openai.request_body(_request("fast"))).decode()
    await openai.aclose()
    await anthropic.aclose()


def test_regression_mock_tags_do_not_change_the_scenario() -> None:
    """A unique model suffix once made the mock fall back to the default answer, so the
    'silent upstream' cancel tests ran against a talking one. Tags are labels only."""
    from tokenrelay.mock.scenario import read_scenario
    from tokenrelay.providers.sim import SimTiming

    timing = SimTiming()
    assert read_scenario("slow-start+tag-1a2b", timing).sim_model == "slow-start"
    assert read_scenario("default+endless+tag-x", timing).sim_model == "default+endless"
    assert read_scenario("gpt-4o", timing).sim_model == "default"
