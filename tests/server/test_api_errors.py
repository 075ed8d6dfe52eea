"""Bad input gets a clear 4xx naming the field; nothing leaks; CORS stays closed by default."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import ExplodingProvider, quick_settings
from tokenrelay.server.app import create_app

pytestmark = pytest.mark.anyio

JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, ["message"]),
        ({"message": ""}, ["message"]),
        ({"message": "   "}, ["message"]),
        ({"messages": []}, ["messages"]),
        ({"message": "a", "messages": [{"role": "user", "content": "b"}]}, ["message"]),
        ({"messages": [{"role": "robot", "content": "x"}]}, ["messages[0].role"]),
        ({"messages": [{"role": "user", "content": ""}]}, ["messages[0].content"]),
        ({"messages": [{"role": "user"}]}, ["messages[0].content"]),
        ({"messages": "hi"}, ["messages"]),
        ({"message": 5}, ["message"]),
        ({"message": "x", "max_tokens": "10"}, ["max_tokens"]),
        ({"message": "x", "max_tokens": 0}, ["max_tokens"]),
        ({"message": "x", "max_tokens": 10**9}, ["max_tokens"]),
        ({"message": "x", "max_tokens": True}, ["max_tokens"]),
        ({"message": "x", "temperature": -0.1}, ["temperature"]),
        ({"message": "x", "temperature": 2.5}, ["temperature"]),
        ({"message": "x", "temperature": "hot"}, ["temperature"]),
        ({"message": "x", "on_disconnect": "ignore"}, ["on_disconnect"]),
        ({"message": "x", "on_upstream_error": "retry"}, ["on_upstream_error"]),
        ({"message": "x", "chunking": "sentence"}, ["chunking"]),
        ({"message": "x", "response_format": {"type": "xml"}}, ["response_format.type"]),
        (
            {"message": "x", "response_format": {"type": "json_schema"}},
            ["response_format.json_schema"],
        ),
        ({"message": "x", "stream": True, "foo": 1}, ["stream", "foo"]),
        ({"message": "x", "model": "openai/gpt\nINFO forged log line"}, ["model"]),
        (
            {"message": "", "max_tokens": -1, "temperature": 9},
            ["message", "max_tokens", "temperature"],
        ),
    ],
)
@pytest.mark.parametrize("path", ["/api/chat/stream", "/api/chat"])
async def test_invalid_requests_are_422_naming_each_field(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], fields: list[str]
) -> None:
    r = await client.post(path, json=body)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["type"] == "invalid_request"
    assert sorted(p["field"] for p in error["fields"]) == sorted(fields)
    assert all(f in error["message"] for f in fields)
    assert error["request_id"] == r.headers["x-request-id"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"message": "x", "max_tokens": "ten"}, "max_tokens"),
        ({"message": "x", "bogus": "1"}, "bogus"),
        ({"messages": "not json"}, "messages"),
        ({}, "message"),
    ],
)
async def test_get_variant_validates_too(
    client: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    r = await client.get("/api/chat/stream", params=params)
    assert r.status_code == 422
    assert field in [p["field"] for p in r.json()["error"]["fields"]]


async def test_repeated_query_parameter_is_refused(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/chat/stream?message=a&message=b")
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["field"] == "message"


@pytest.mark.parametrize("body", [b"{", b"", b"nul", b'{"message": "x",}', b"\xff\xfe"])
async def test_malformed_json_is_400(client: httpx.AsyncClient, body: bytes) -> None:
    r = await client.post("/api/chat/stream", content=body, headers=JSON)
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_json"


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_non_json_content_type_is_415(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    r = await client.post("/api/chat/stream", content=b'{"message": "x"}', headers=headers)
    assert r.status_code == 415
    assert "application/json" in r.json()["error"]["message"]


async def test_json_with_charset_is_accepted(client: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/json; charset=utf-8"}
    r = await client.post(
        "/api/chat", content=b'{"message": "x", "model": "sim/fast"}', headers=headers
    )
    assert r.status_code == 200


async def test_oversized_body_is_413_without_reading_past_the_limit() -> None:
    app = create_app(quick_settings().with_changes(server={"max_body_bytes": 1000}))
    reads = 0

    async def body() -> Any:
        nonlocal reads
        for _ in range(100):  # 100 KB offered, chunked, no content-length
            reads += 1
            yield b"x" * 1024

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post("/api/chat/stream", content=body(), headers=JSON)
        assert r.status_code == 413
        assert r.json()["error"]["type"] == "payload_too_large"
        assert reads <= 3
        declared = {**JSON, "content-length": "5000"}
        r = await c.post("/api/chat/stream", content=b"x" * 5000, headers=declared)
        assert r.status_code == 413


async def test_each_route_family_has_its_own_body_limit() -> None:
    settings = quick_settings().with_changes(server={"max_body_bytes": 1000})
    app = create_app(settings)
    image = "data:image/png;base64," + "A" * (2 * 1024 * 1024)  # 1.5 MB of image: a photo
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": image}},
    ]
    chat = {"model": "sim/fast", "messages": [{"role": "user", "content": content}]}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post("/v1/chat/completions", json=chat)  # under /v1's 20 MiB
        assert r.status_code == 200
        assert "an image" in r.json()["choices"][0]["message"]["content"]
        r = await c.post("/api/chat", json={"message": "x" * 2000, "model": "sim/fast"})
        assert r.status_code == 413  # the native API's own limit
    small = settings.with_changes(server={"max_body_bytes_v1": 1000})
    app = create_app(small)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post("/v1/chat/completions", json=chat)
        assert r.status_code == 413
        assert r.json()["error"]["type"] == "invalid_request_error"  # OpenAI's shape
        r = await c.post(
            "/v1/messages",
            json={
                "model": "sim/fast",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "x" * 2000}],
            },
        )
        assert r.status_code == 413
        assert r.json()["error"]["type"] == "request_too_large"  # Anthropic's


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "/api/chat",
            {"message": "hi", "tools": [{"name": "f", "parameters": {"type": "str"}}]},
            "tools[0].parameters",
        ),
        (
            "/v1/chat/completions",
            {
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [
                    {"type": "function", "function": {"name": "f", "parameters": {"type": "str"}}}
                ],
            },
            "tools[0].function.parameters",
        ),
        (
            "/v1/messages",
            {
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"name": "f", "input_schema": {"type": "str"}}],
            },
            "tools[0].input_schema",
        ),
    ],
)
async def test_a_tool_schema_must_be_a_json_schema(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], field: str
) -> None:
    r = await client.post(path, json={"model": "sim/fast", **body})
    assert r.status_code in (400, 422)
    message = r.json()["error"]["message"]
    assert f"{field}: is not a valid JSON Schema" in message
    assert "'str'" not in message  # where in the schema, never the caller's value


async def test_unknown_model_is_404_listing_known_ones(client: httpx.AsyncClient) -> None:
    for model in ["gpt-4o", "nope/x", "sim/", "sim/warp-speed"]:
        r = await client.post("/api/chat/stream", json={"message": "x", "model": model})
        assert r.status_code == 404
        error = r.json()["error"]
        assert error["type"] == "unknown_model"
        assert "sim/default" in error["known_models"]
        assert "sim/default" in error["message"]


async def test_unknown_stream_is_404(client: httpx.AsyncClient) -> None:
    for method in ["GET", "DELETE"]:
        r = await client.request(method, "/api/streams/str_doesnotexist")
        assert r.status_code == 404
        assert r.json()["error"]["type"] == "unknown_stream"


async def test_unknown_route_and_method_are_json(client: httpx.AsyncClient) -> None:
    r = await client.get("/nope")
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "not_found"
    r = await client.put("/api/chat")
    assert r.status_code == 405
    assert r.json()["error"]["type"] == "method_not_allowed"


async def test_unexpected_failures_are_500_without_details(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_app(quick_settings(), providers=[ExplodingProvider()])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.post("/api/chat/stream", json={"message": "x", "model": "boom/x"})
    assert r.status_code == 500
    assert r.json()["error"]["type"] == "internal_error"
    assert "secret" not in r.text
    assert "RuntimeError" not in r.text
    assert r.json()["error"]["request_id"] in caplog.text  # findable in the logs


async def test_cors_is_off_by_default(client: httpx.AsyncClient) -> None:
    headers = {"origin": "https://evil.example", "access-control-request-method": "POST"}
    r = await client.options("/api/chat/stream", headers=headers)
    assert "access-control-allow-origin" not in r.headers
    r = await client.post("/api/chat", json={"message": "x", "model": "sim/fast"}, headers=headers)
    assert "access-control-allow-origin" not in r.headers


async def test_cors_allows_only_configured_origins() -> None:
    settings = quick_settings().with_changes(server={"cors_origins": ["https://app.example"]})
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        ok = {"origin": "https://app.example", "access-control-request-method": "POST"}
        r = await c.options("/api/chat/stream", headers=ok)
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        bad = {**ok, "origin": "https://evil.example"}
        r = await c.options("/api/chat/stream", headers=bad)
        assert r.headers.get("access-control-allow-origin") != "https://evil.example"


@pytest.mark.parametrize(
    ("path", "extra"), [("/v1/chat/completions", {}), ("/v1/messages", {"max_tokens": 5})]
)
async def test_a_model_name_with_a_line_break_is_refused_in_every_dialect(
    client: httpx.AsyncClient, path: str, extra: dict[str, Any]
) -> None:
    """Model names are logged (the request line); a line break would forge a log line."""
    body = {"model": "gpt\r\nINFO forged", "messages": [{"role": "user", "content": "x"}]}
    r = await client.post(path, json={**body, **extra})
    assert r.status_code == 400
    assert "model: must not contain control characters" in r.json()["error"]["message"]
