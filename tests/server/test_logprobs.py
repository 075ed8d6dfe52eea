"""`logprobs` and `top_logprobs` reach an upstream that scores tokens, and its scores come back
in every form: OpenAI chunks (the SDK's accumulation), the non-streaming completion, and the
native `logprobs` event. An upstream that cannot score refuses them by name."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import sse_events
from tests.realserver import MockUpstream, RealServer, mock_upstream, real_server
from tokenrelay.wire import openai as openai_wire

pytestmark = pytest.mark.server

USER: Any = [{"role": "user", "content": "Explain TCP handshakes"}]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockUpstream]:
    with mock_upstream(tmp_path_factory.mktemp("logprobs-mock")) as running:
        yield running


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, upstream: MockUpstream
) -> Iterator[RealServer]:
    config = f"""
[sim]
ttft = 0.0
tokens_per_second = 0.0
[streams]
max_retries = 0
[upstreams.openai]
kind = "openai"
base_url = "{upstream.url}/v1"
[upstreams.anthropic]
kind = "anthropic"
base_url = "{upstream.url}"
"""
    with real_server(tmp_path_factory.mktemp("logprobs"), config, {}) as running:
        yield running


@pytest.mark.parametrize("provider", ["sim", "openai"])
def test_the_sdk_accumulates_every_tokens_scores(oai: openai.OpenAI, provider: str) -> None:
    with oai.chat.completions.stream(
        model=f"{provider}/fast", messages=USER, logprobs=True, top_logprobs=3
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.logprobs is not None
    assert choice.logprobs.content is not None
    scored = choice.logprobs.content
    assert "".join(entry.token for entry in scored) == choice.message.content
    assert len(scored) > 10  # one entry a token, for a whole answer
    assert all(len(entry.top_logprobs) == 3 for entry in scored)
    assert scored[0].top_logprobs[0].token == scored[0].token


@pytest.mark.parametrize("provider", ["sim", "openai"])
def test_a_whole_completion_carries_the_scores(oai: openai.OpenAI, provider: str) -> None:
    answer = oai.chat.completions.create(
        model=f"{provider}/fast", messages=USER, logprobs=True, max_tokens=5
    )
    scored = answer.choices[0].logprobs
    assert scored is not None
    assert scored.content is not None
    assert "".join(e.token for e in scored.content) == answer.choices[0].message.content


def test_without_logprobs_no_scores_are_sent(oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(model="openai/fast", messages=USER, stream=True))
    assert all(c.choices[0].logprobs is None for c in chunks if c.choices)


def test_the_native_stream_sends_a_logprobs_event_after_each_token(server: RealServer) -> None:
    body = {"model": "openai/fast", "message": "hi", "logprobs": True, "max_tokens": 4}
    response = httpx.post(f"{server.url}/api/chat/stream", json=body, timeout=30)
    events = sse_events(response.content)
    kinds = [e["type"] for e in events]
    assert kinds.count("logprobs") == kinds.count("token") == 4
    for index, kind in enumerate(kinds):
        if kind == "logprobs":
            assert kinds[index - 1] == "token"
            token = events[index - 1]["content"]
            assert [e["token"] for e in events[index]["content"]] == [token]


def test_an_upstream_that_cannot_score_refuses_by_name(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(
            model="anthropic/fast", messages=USER, logprobs=True, top_logprobs=2
        )
    error: Any = caught.value.body
    assert "logprobs: is not supported by the anthropic provider" in error["message"]
    assert "top_logprobs: is not supported" in error["message"]
    assert error["param"] in ("logprobs", "top_logprobs")


def test_the_decoder_keeps_the_scores_with_their_text() -> None:
    chunk = (
        '{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null,'
        '"logprobs":{"content":[{"token":"Hi","logprob":-0.5,"bytes":[72,105],"top_logprobs":[]}]}}]}'
    )
    [delta] = openai_wire.ChunkDecoder().feed(chunk)
    assert delta.text == "Hi"
    assert delta.logprobs == [
        {"token": "Hi", "logprob": -0.5, "bytes": [72, 105], "top_logprobs": []}
    ]
