"""The official `openai` and `anthropic` SDKs, unmodified, against a real tokenrelay.

tokenrelay's `openai` and `anthropic` upstreams point at the mock upstream, so every provider
is exercised: sim in-process, the other two over real HTTP through their adapters.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.realserver import MockUpstream, RealServer, mock_upstream, real_server
from tokenrelay.mock.scenario import MOCK_SECRET
from tokenrelay.providers.sim_text import compose_answer

pytestmark = pytest.mark.server

PROVIDERS = ["sim", "openai", "anthropic"]
QUESTION = "Explain TCP handshakes"
UPSTREAM_KEY = "sk-test-upstream-KEY-42fe"


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockUpstream]:
    with mock_upstream(tmp_path_factory.mktemp("sdk-mock")) as running:
        yield running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream) -> Iterator[RealServer]:
    config = f"""
[sim]
ttft = 0.01
tokens_per_second = 400.0
[streams]
max_retries = 0
[upstreams.openai]
kind = "openai"
base_url = "{mock.url}/v1"
api_key_env = "TEST_UPSTREAM_KEY"
[upstreams.anthropic]
kind = "anthropic"
base_url = "{mock.url}"
api_key_env = "TEST_UPSTREAM_KEY"
"""
    env = {"TEST_UPSTREAM_KEY": UPSTREAM_KEY}
    with real_server(tmp_path_factory.mktemp("sdk"), config, env) as running:
        yield running


def _user(text: str = QUESTION) -> Any:
    """The SDKs type messages as TypedDicts; a plain list is what users write."""
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_openai_sdk_streams(oai: openai.OpenAI, provider: str) -> None:
    stream = oai.chat.completions.create(
        model=f"{provider}/fast",
        messages=_user(),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == compose_answer(QUESTION)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_openai_sdk_non_streaming(oai: openai.OpenAI, provider: str) -> None:
    completion = oai.chat.completions.create(
        model=f"{provider}/fast",
        messages=_user(),
        max_tokens=7,
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 7


@pytest.mark.anyio
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_openai_async_sdk_streams(server: RealServer, provider: str) -> None:
    client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    stream = await client.chat.completions.create(
        model=f"{provider}/fast",
        messages=_user(),
        stream=True,
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == compose_answer(QUESTION)
    await client.close()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_openai_sdk_sees_an_error_mid_stream(oai: openai.OpenAI, provider: str) -> None:
    stream = oai.chat.completions.create(
        model=f"{provider}/fast+error-after-3",
        messages=_user(),
        stream=True,
    )
    received: list[str] = []

    def read_all() -> None:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIError) as caught:
        read_all()
    assert "".join(received) == "".join(compose_answer(QUESTION))[: len("".join(received))]
    assert len([r for r in received if r]) == 3
    assert "error" in str(caught.value).lower()


def test_openai_sdk_content_filter_is_a_finish(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="sim/fast+content-filter-after-2",
        messages=_user(),
        stream=True,
    )
    finishes = [c.choices[0].finish_reason for c in stream if c.choices]
    assert finishes[-1] == "content_filter"


def test_openai_sdk_gets_real_statuses_before_the_first_token(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        list(
            oai.chat.completions.create(
                model="sim/fast+rate-limit",
                messages=_user(),
                stream=True,
            )
        )
    assert caught.value.response.headers["retry-after"] == "1"
    with pytest.raises(openai.BadRequestError) as bad:
        oai.chat.completions.create(model="sim/fast", messages=[])
    assert "messages" in str(bad.value)
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="nope/x", messages=_user())


def test_a_request_the_upstream_refuses_is_a_400_the_sdks_do_not_retry(
    server: RealServer, mock: MockUpstream
) -> None:
    """An upstream 400 (say, a context too long) was a 502, and each SDK retried it twice."""
    before = len(mock.record())
    retrying = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    with retrying, pytest.raises(openai.BadRequestError) as caught:
        list(
            retrying.chat.completions.create(
                model="openai/fast+status-400+leak-secret", messages=_user(), stream=True
            )
        )
    assert caught.value.code == "upstream_rejected"
    assert MOCK_SECRET not in caught.value.response.text
    retrying_claude = anthropic.Anthropic(base_url=server.url, api_key="unused")
    with retrying_claude, pytest.raises(anthropic.BadRequestError):
        retrying_claude.messages.create(
            model="anthropic/fast+status-400", max_tokens=50, messages=_user()
        )
    assert len(mock.record()) == before + 2  # one upstream request each: nobody retried


def test_openai_sdk_lists_models(oai: openai.OpenAI) -> None:
    ids = {m.id for m in oai.models.list()}
    assert {"sim/default", "sim/fast"} <= ids


@pytest.mark.parametrize("provider", PROVIDERS)
def test_anthropic_sdk_streams(claude: anthropic.Anthropic, provider: str) -> None:
    with claude.messages.stream(
        model=f"{provider}/fast",
        max_tokens=1024,
        system="Be brief.",
        messages=_user(),
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == compose_answer(QUESTION)
    assert final.stop_reason == "end_turn"
    assert final.content[0].type == "text"
    assert final.content[0].text == text
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_anthropic_sdk_non_streaming(claude: anthropic.Anthropic, provider: str) -> None:
    message = claude.messages.create(
        model=f"{provider}/fast",
        max_tokens=5,
        messages=_user(),
    )
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 5


@pytest.mark.anyio
async def test_anthropic_async_sdk_streams(server: RealServer) -> None:
    client = anthropic.AsyncAnthropic(base_url=server.url, api_key="unused", max_retries=0)
    async with client.messages.stream(
        model="anthropic/fast",
        max_tokens=1024,
        messages=_user(),
    ) as stream:
        text = "".join([t async for t in stream.text_stream])
    assert text == compose_answer(QUESTION)
    await client.close()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_anthropic_sdk_sees_an_error_mid_stream(claude: anthropic.Anthropic, provider: str) -> None:
    with (
        pytest.raises(anthropic.APIStatusError),
        claude.messages.stream(
            model=f"{provider}/fast+error-after-3",
            max_tokens=1024,
            messages=_user(),
        ) as stream,
    ):
        for _ in stream.text_stream:
            pass


def test_anthropic_sdk_bad_input(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(model="sim/fast", max_tokens=0, messages=_user())
    assert "max_tokens" in str(caught.value)


@pytest.mark.parametrize(
    "model",
    [
        "openai/fast+status-500+leak-secret",
        "openai/fast+error-after-2+leak-secret",
        "anthropic/fast+status-529+leak-secret",
        "anthropic/fast+error-after-2+leak-secret",
    ],
)
def test_upstream_secrets_never_reach_clients_or_logs(
    oai: openai.OpenAI, server: RealServer, model: str
) -> None:
    with pytest.raises(openai.APIError) as caught:
        list(oai.chat.completions.create(model=model, messages=_user(), stream=True))
    assert MOCK_SECRET not in str(caught.value.body)
    assert MOCK_SECRET not in str(caught.value)
    assert MOCK_SECRET not in server.log()


def test_upstream_keys_stay_out_of_logs_and_responses(
    oai: openai.OpenAI, server: RealServer
) -> None:
    list(oai.chat.completions.create(model="openai/fast", messages=_user(), stream=True))
    for model in ["anthropic/fast+error-after-1", "openai/fast+status-500"]:
        with pytest.raises(openai.APIError) as caught:
            list(oai.chat.completions.create(model=model, messages=_user(), stream=True))
        assert UPSTREAM_KEY not in str(caught.value.body)
    assert UPSTREAM_KEY not in oai.models.list().model_dump_json()
    assert UPSTREAM_KEY not in server.log()


def test_startup_line_names_the_configured_providers(server: RealServer) -> None:
    first = server.log().splitlines()[0]
    assert "providers anthropic, openai and sim" in first
    assert server.url in first
