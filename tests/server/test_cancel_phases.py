"""A client that leaves closes the upstream connection, in every phase and on every endpoint.

The mock upstream records when its client (tokenrelay) went away; that is the bill stopping.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from tests.abort import open_request, read_until, upstream_gone_after
from tests.realserver import MockUpstream, RealServer, mock_upstream, real_server

pytestmark = pytest.mark.server

COMMIT_DEADLINE = 0.3


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockUpstream]:
    with mock_upstream(tmp_path_factory.mktemp("cancel-mock"), ttft=0.05, tps=100.0) as running:
        yield running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream) -> Iterator[RealServer]:
    config = f"""
[streams]
commit_deadline = {COMMIT_DEADLINE}
[upstreams.openai]
kind = "openai"
base_url = "{mock.url}/v1"
[upstreams.anthropic]
kind = "anthropic"
base_url = "{mock.url}"
"""
    with real_server(tmp_path_factory.mktemp("cancel"), config) as running:
        yield running


def _model(base: str) -> str:
    """A model name unique to this test, so the mock's record is unambiguous."""
    return f"{base}+tag-{uuid.uuid4().hex[:8]}"


USER = [{"role": "user", "content": "x"}]
PATHS = {
    "native-stream": "/api/chat/stream",
    "native-complete": "/api/chat",
    "openai-stream": "/v1/chat/completions",
    "openai-complete": "/v1/chat/completions",
    "anthropic-stream": "/v1/messages",
    "anthropic-complete": "/v1/messages",
}


def _request(endpoint: str, model: str) -> tuple[str, dict[str, object]]:
    """The path and body for `endpoint`, in its dialect."""
    stream = endpoint.endswith("-stream")
    if endpoint.startswith("native"):
        return PATHS[endpoint], {"message": "x", "model": model}
    body: dict[str, object] = {"model": model, "stream": stream, "messages": USER}
    if endpoint.startswith("anthropic"):
        body["max_tokens"] = 50
    return PATHS[endpoint], body


@pytest.mark.parametrize("endpoint", list(PATHS))
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_abort_before_response_headers(
    server: RealServer, mock: MockUpstream, endpoint: str, provider: str
) -> None:
    """The upstream is silent (slow-start), the status line not yet sent: abort now."""
    model = _model("slow-start")
    sock = open_request(server.url, *_request(endpoint, f"{provider}/{model}"))
    time.sleep(COMMIT_DEADLINE / 2)
    closed_at = time.time()
    sock.close()
    assert upstream_gone_after(mock, model, closed_at) < 2.0


@pytest.mark.parametrize("endpoint", ["native-stream", "openai-stream", "anthropic-stream"])
def test_abort_after_headers_while_waiting_for_the_first_token(
    server: RealServer, mock: MockUpstream, endpoint: str
) -> None:
    model = _model("slow-start")
    sock = open_request(server.url, *_request(endpoint, f"openai/{model}"))
    assert b"200 OK" in read_until(sock, b"\r\n\r\n")  # committed at the deadline
    closed_at = time.time()
    sock.close()
    assert upstream_gone_after(mock, model, closed_at) < 2.0


@pytest.mark.parametrize("endpoint", ["native-stream", "openai-stream", "anthropic-stream"])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_abort_mid_stream(
    server: RealServer, mock: MockUpstream, endpoint: str, provider: str
) -> None:
    model = _model("default+endless")
    sock = open_request(server.url, *_request(endpoint, f"{provider}/{model}"))
    marker = b'"content":' if endpoint != "anthropic-stream" else b"text_delta"
    seen = read_until(sock, marker)
    assert marker in seen
    closed_at = time.time()
    sock.close()
    assert upstream_gone_after(mock, model, closed_at) < 2.0
