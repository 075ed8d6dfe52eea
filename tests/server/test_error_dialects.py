"""Every failure on a /v1 route comes back in that dialect's error shape, whatever raised it."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import httpx
import pytest

from tests.conftest import ExplodingProvider, quick_settings
from tokenrelay.server.app import create_app
from tokenrelay.server.dialects import ANTHROPIC, NATIVE, OPENAI, dialect_of

pytestmark = pytest.mark.anyio

MESSAGES = [{"role": "user", "content": "hi"}]


def openai_shaped(body: dict[str, Any], code: str) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code


def anthropic_shaped(body: dict[str, Any], kind: str) -> None:
    assert body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == kind


@pytest.fixture
async def raw_client() -> AsyncGenerator[httpx.AsyncClient, None]:
    app = create_app(quick_settings(), providers=[ExplodingProvider()])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client


def test_the_dialect_is_chosen_by_the_route() -> None:
    def scope(path: str, *headers: tuple[bytes, bytes]) -> dict[str, Any]:
        return {"type": "http", "path": path, "headers": list(headers)}

    assert dialect_of(scope("/api/chat/stream")) is NATIVE
    assert dialect_of(scope("/v1/chat/completions")) is OPENAI
    assert dialect_of(scope("/v1/messages")) is ANTHROPIC
    assert dialect_of(scope("/v1/models")) is OPENAI
    anthropic_sdk = (b"anthropic-version", b"2023-06-01")
    assert dialect_of(scope("/v1/models", anthropic_sdk)) is ANTHROPIC
    assert dialect_of(scope("/v1/chat/completions", anthropic_sdk)) is OPENAI


async def test_unknown_routes_and_methods_under_v1(raw_client: httpx.AsyncClient) -> None:
    r = await raw_client.post("/v1/nothing", json={})
    assert r.status_code == 404
    openai_shaped(r.json(), "not_found")
    r = await raw_client.get("/v1/chat/completions")
    assert r.status_code == 405
    openai_shaped(r.json(), "method_not_allowed")
    r = await raw_client.get("/v1/messages")
    assert r.status_code == 405
    anthropic_shaped(r.json(), "invalid_request_error")
    r = await raw_client.get("/v1/nothing", headers={"anthropic-version": "2023-06-01"})
    anthropic_shaped(r.json(), "not_found_error")


@pytest.mark.parametrize(
    ("path", "extra"), [("/v1/chat/completions", {}), ("/v1/messages", {"max_tokens": 5})]
)
async def test_bad_bodies_and_limits(
    raw_client: httpx.AsyncClient, path: str, extra: dict[str, Any]
) -> None:
    shaped = openai_shaped if path.endswith("completions") else anthropic_shaped
    kind = "invalid_json" if path.endswith("completions") else "invalid_request_error"
    r = await raw_client.post(path, content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400
    shaped(r.json(), kind)
    r = await raw_client.post(path, content=b"x", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    r = await raw_client.post(path, json={"model": "sim/fast", "messages": "no", **extra})
    assert r.status_code == 400
    if path.endswith("completions"):
        assert r.json()["error"]["param"] == "messages"


@pytest.mark.parametrize(
    ("path", "extra"), [("/v1/chat/completions", {}), ("/v1/messages", {"max_tokens": 5})]
)
async def test_an_unexpected_failure_is_a_500_in_the_dialect(
    raw_client: httpx.AsyncClient, path: str, extra: dict[str, Any]
) -> None:
    r = await raw_client.post(path, json={"model": "boom/x", "messages": MESSAGES, **extra})
    assert r.status_code == 500
    assert "secret" not in r.text
    assert r.headers["x-request-id"].startswith("req_")
    if path.endswith("completions"):
        openai_shaped(r.json(), "internal_error")
    else:
        anthropic_shaped(r.json(), "api_error")


@pytest.mark.parametrize(
    ("path", "extra"), [("/v1/chat/completions", {}), ("/v1/messages", {"max_tokens": 5})]
)
async def test_a_draining_server_answers_503_with_retry_after_in_the_dialect(
    path: str, extra: dict[str, Any]
) -> None:
    app = create_app(quick_settings())
    app.state.tokenrelay.manager._draining = True
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post(path, json={"model": "sim/fast", "messages": MESSAGES, **extra})
    assert r.status_code == 503
    assert r.headers["retry-after"] == "5"
    if path.endswith("completions"):
        openai_shaped(r.json(), "service_unavailable")
    else:
        anthropic_shaped(r.json(), "overloaded_error")


@pytest.mark.parametrize(
    ("path", "extra"), [("/v1/chat/completions", {}), ("/v1/messages", {"max_tokens": 5})]
)
async def test_a_stream_that_fails_before_its_first_token_answers_in_the_dialect(
    path: str, extra: dict[str, Any]
) -> None:
    app = create_app(quick_settings(max_retries=0, commit_deadline=2.0))
    body = {"model": "sim/fast+rate-limit", "messages": MESSAGES, "stream": True, **extra}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post(path, json=body)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1"
    if path.endswith("completions"):
        openai_shaped(r.json(), "rate_limit")
    else:
        anthropic_shaped(r.json(), "rate_limit_error")
