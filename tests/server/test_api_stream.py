"""The native streaming API in-process: the event contract, headers, cancel, disconnect."""

from __future__ import annotations

import asyncio
import os

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from tests.conftest import AsgiExchange, drive, quick_settings, sse_events
from tokenrelay.providers.sim_text import compose_answer
from tokenrelay.server.app import create_app
from tokenrelay.server.state import AppState

pytestmark = pytest.mark.anyio


def _state(app: Starlette) -> AppState:
    state: AppState = app.state.tokenrelay
    return state


async def test_post_stream_sends_start_tokens_done(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/chat/stream", json={"message": "Explain TCP", "model": "sim/fast"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert "content-length" not in response.headers
    stream_id = response.headers["x-stream-id"]
    events = sse_events(response.content)
    assert [e["_id"] for e in events] == [f"{stream_id}:{i}" for i in range(1, len(events) + 1)]
    assert events[0] == {
        "type": "start",
        "stream_id": stream_id,
        "model": "sim/fast",
        "_id": f"{stream_id}:1",
    }
    assert {e["type"] for e in events[1:-1]} == {"token"}
    assert "".join(e["content"] for e in events[1:-1]) == compose_answer("Explain TCP")
    done = events[-1]
    assert done["type"] == "done"
    assert done["finish_reason"] == "stop"
    assert done["token_count"] == len(events) - 2
    assert set(done) >= {"elapsed_seconds", "tokens_per_second", "ttft_ms", "usage"}
    assert done["usage"]["completion_tokens"] == done["token_count"]


async def test_stream_ids_are_long_and_random(client: httpx.AsyncClient) -> None:
    ids = set()
    for _ in range(5):
        r = await client.post(
            "/api/chat/stream", json={"message": "x", "model": "sim/fast", "max_tokens": 1}
        )
        ids.add(r.headers["x-stream-id"])
    assert len(ids) == 5
    assert all(
        len(i.removeprefix("str_")) >= 22 and ":" not in i for i in ids
    )  # 22 chars = 128 bits


async def test_default_model_is_used_when_none_given(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/chat/stream", json={"message": "x", "max_tokens": 2})
    assert sse_events(r.content)[0]["model"] == "sim/default"


async def test_multi_turn_and_system_prompt(client: httpx.AsyncClient) -> None:
    body = {
        "messages": [
            {"role": "user", "content": "Tell me about queues"},
            {"role": "assistant", "content": "Queues hold work."},
            {"role": "user", "content": "Write code for a queue"},
        ],
        "system_prompt": "Be brief.",
        "model": "sim/fast",
        "temperature": 0.2,
    }
    events = sse_events((await client.post("/api/chat/stream", json=body)).content)
    text = "".join(e["content"] for e in events if e["type"] == "token")
    assert "```python" in text  # answers the last user turn


async def test_get_variant_takes_the_same_fields(client: httpx.AsyncClient) -> None:
    params = {"message": "hello", "model": "sim/fast", "max_tokens": "5", "temperature": "0.5"}
    response = await client.get("/api/chat/stream", params=params)
    events = sse_events(response.content)
    assert events[-1]["type"] == "done"
    assert events[-1]["token_count"] == 5
    messages = orjson.dumps([{"role": "user", "content": "hi"}]).decode()
    response = await client.get(
        "/api/chat/stream", params={"messages": messages, "model": "sim/fast"}
    )
    assert sse_events(response.content)[-1]["type"] == "done"


async def test_errors_mid_stream_keep_the_partial_text(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/chat/stream", json={"message": "x", "model": "sim/fast+error-after-3"}
    )
    events = sse_events(r.content)
    assert [e["type"] for e in events] == ["start", "token", "token", "token", "error"]
    assert events[-1]["error_type"] == "api_error"
    assert events[-1]["retryable"] is True


async def test_non_streaming_fallback(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/chat", json={"message": "Explain TCP", "model": "sim/fast"})
    assert r.status_code == 200
    body = r.json()
    assert body["content"] == compose_answer("Explain TCP")
    assert body["model"] == "sim/fast"
    assert body["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == body["token_count"] > 0


@pytest.mark.parametrize(
    ("model", "status", "error_type"),
    [
        ("sim/fast+rate-limit", 429, "rate_limit"),
        ("sim/fast+error-after-2", 502, "api_error"),
        ("sim/fast+content-filter-after-2", 422, "content_filter"),
    ],
)
async def test_non_streaming_failures_are_http_errors(
    client: httpx.AsyncClient, model: str, status: int, error_type: str
) -> None:
    r = await client.post("/api/chat", json={"message": "x", "model": model})
    assert r.status_code == status
    assert r.json()["error"]["type"] == error_type
    assert r.json()["error"]["request_id"] == r.headers["x-request-id"]


async def test_delete_cancels_a_running_stream(app: Starlette, client: httpx.AsyncClient) -> None:
    exchange = AsgiExchange()
    body = orjson.dumps({"message": "x", "model": "sim/slow-start"})
    task = asyncio.create_task(drive(app, exchange, "POST", "/api/chat/stream", body))
    await asyncio.wait_for(exchange.started.wait(), 1.0)
    stream_id = exchange.header("x-stream-id")
    r = await client.delete(f"/api/streams/{stream_id}")
    assert r.status_code == 202
    assert r.json() == {"id": stream_id, "cancelled": True}
    await asyncio.wait_for(task, 2.0)
    events = sse_events(exchange.body)
    assert events[-1]["type"] == "cancelled"
    assert events[-1]["reason"] == "cancelled_by_request"
    assert (await client.delete(f"/api/streams/{stream_id}")).json()["cancelled"] is False


@pytest.mark.parametrize("model", ["sim/slow-start", "sim/default+endless"])
async def test_disconnect_cancels_the_producer_in_every_phase(model: str) -> None:
    """While waiting for the first token (slow-start) and mid-answer (endless)."""
    app = create_app(quick_settings())
    manager = _state(app).manager
    exchange = AsgiExchange()
    body = orjson.dumps({"message": "x", "model": model})
    task = asyncio.create_task(drive(app, exchange, "POST", "/api/chat/stream", body))
    await asyncio.sleep(0.1)
    assert manager.active_count == 1
    stream_id = exchange.header("x-stream-id")
    assert stream_id is not None
    exchange.disconnect.set()
    await asyncio.wait_for(task, 1.0)
    await asyncio.sleep(0.01)
    assert manager.active_count == 0
    events = await manager.log.read(stream_id, 0, wait=0)
    assert events[-1].type == "cancelled"
    assert events[-1].payload()["reason"] == "client_disconnected"


async def test_detach_policy_survives_the_disconnect() -> None:
    app = create_app(quick_settings(resume_window=5.0))
    manager = _state(app).manager
    exchange = AsgiExchange()
    body = orjson.dumps({"message": "x", "model": "sim/default", "on_disconnect": "detach"})
    task = asyncio.create_task(drive(app, exchange, "POST", "/api/chat/stream", body))
    await asyncio.sleep(0.05)
    exchange.disconnect.set()
    await asyncio.wait_for(task, 1.0)
    stream_id = exchange.header("x-stream-id")
    assert stream_id is not None
    for _ in range(300):
        events = await manager.log.read(stream_id, 0, wait=0)
        if events[-1].terminal:
            break
        await asyncio.sleep(0.02)
    assert events[-1].type == "done"


async def test_idle_streams_get_ping_comments() -> None:
    app = create_app(quick_settings(keepalive=0.05))
    exchange = AsgiExchange()
    body = orjson.dumps({"message": "x", "model": "sim/slow-start"})
    task = asyncio.create_task(drive(app, exchange, "POST", "/api/chat/stream", body))
    # The window starts with the response: a pause before the request is handled (a garbage
    # collection of earlier tests' objects, on a busy machine) must not eat into it.
    await asyncio.wait_for(exchange.started.wait(), 5.0)
    await asyncio.sleep(0.3)
    exchange.disconnect.set()
    await asyncio.wait_for(task, 1.0)
    assert exchange.body.count(b"\n: ping\n\n") >= 2
    assert sse_events(exchange.body)[0]["type"] == "start"  # pings are not events


async def test_attach_follows_a_running_stream(app: Starlette, client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/chat/stream", json={"message": "x", "model": "sim/fast", "max_tokens": 4}
    )
    stream_id = r.headers["x-stream-id"]
    again = await client.get(f"/api/streams/{stream_id}")
    assert sse_events(again.content) == sse_events(r.content)  # nothing regenerated


async def test_models_and_health(client: httpx.AsyncClient) -> None:
    models = (await client.get("/api/models")).json()
    assert models["default"] == "sim/default"
    assert {"sim/default", "sim/fast"} <= {m["id"] for m in models["models"]}
    health = await client.get("/healthz")
    assert health.json() == {"status": "ok", "active_streams": 0, "store": "ok", "pid": os.getpid()}


async def test_draining_refuses_new_streams(app: Starlette, client: httpx.AsyncClient) -> None:
    _state(app).manager.begin_drain()
    r = await client.post("/api/chat/stream", json={"message": "x"})
    assert r.status_code == 503
    assert r.headers["retry-after"]
    assert r.json()["error"]["type"] == "service_unavailable"
    assert (await client.get("/healthz")).json()["status"] == "draining"


async def test_failure_before_any_token_is_a_real_http_status() -> None:
    """Headers wait for news, so a pre-token failure is a 429 with Retry-After, not a 200."""
    app = create_app(quick_settings(max_retries=0, commit_deadline=2.0))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post("/api/chat/stream", json={"message": "x", "model": "sim/fast+rate-limit"})
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1"
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert error["type"] == "rate_limit"
    assert error["retryable"] is True
    assert error["request_id"] == r.headers["x-request-id"]


async def test_failure_after_tokens_stays_in_band(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/chat/stream", json={"message": "x", "model": "sim/fast+reset-after-2"}
    )
    assert r.status_code == 200
    events = sse_events(r.content)
    assert [e["type"] for e in events] == ["start", "token", "token", "error"]
    assert events[-1]["error_type"] == "network_error"


async def test_silent_upstream_commits_after_the_deadline_and_pings() -> None:
    app = create_app(quick_settings(commit_deadline=0.05, keepalive=0.05))
    exchange = AsgiExchange()
    body = orjson.dumps({"message": "x", "model": "sim/slow-start"})
    task = asyncio.create_task(drive(app, exchange, "POST", "/api/chat/stream", body))
    await asyncio.wait_for(exchange.started.wait(), 1.0)
    assert exchange.status == 200
    exchange.disconnect.set()
    await asyncio.wait_for(task, 1.0)


async def test_on_upstream_error_continue_gives_one_answer(client: httpx.AsyncClient) -> None:
    body = {
        "message": "Explain TCP",
        "model": "sim/fast+reset-after-5",
        "on_upstream_error": "continue",
    }
    events = sse_events((await client.post("/api/chat/stream", json=body)).content)
    assert [e["type"] for e in events].count("status") == 1
    assert events[-1]["type"] == "done"
    assert "".join(e["content"] for e in events if e["type"] == "token") == compose_answer(
        "Explain TCP"
    )


async def test_reasoning_is_sent_unless_the_request_leaves_it_out(
    client: httpx.AsyncClient,
) -> None:
    body = {"model": "sim/fast+think", "message": "Why is the sky blue?"}
    shown = sse_events((await client.post("/api/chat/stream", json=body)).content)
    hidden = sse_events(
        (await client.post("/api/chat/stream", json={**body, "include_reasoning": False})).content
    )
    assert any(e["type"] == "reasoning" for e in shown)
    assert not any(e["type"] == "reasoning" for e in hidden)
    text = ["".join(e["content"] for e in s if e["type"] == "token") for s in (shown, hidden)]
    assert text[0] == text[1] == compose_answer("Why is the sky blue?")
    # The upstream still reasoned, and billed it: the count says so either way.
    usage = [s[-1]["usage"] for s in (shown, hidden)]
    assert usage[0]["completion_tokens"] == usage[1]["completion_tokens"]
    assert usage[1]["completion_tokens_details"]["reasoning_tokens"] > 0


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 200),  # curl, scripts
        ({"sec-fetch-site": "same-origin"}, 200),  # the chat page's own EventSource
        ({"sec-fetch-site": "none"}, 200),  # typed into the address bar
        ({"sec-fetch-site": "cross-site", "origin": "https://evil.test"}, 403),
        ({"sec-fetch-site": "same-site"}, 403),
        ({"origin": "https://evil.test"}, 403),  # a browser without Sec-Fetch-Site
        ({"origin": "http://tokenrelay.test"}, 200),  # its own origin
    ],
)
async def test_a_get_from_another_site_cannot_start_a_generation(
    client: httpx.AsyncClient, headers: dict[str, str], status: int
) -> None:
    r = await client.get("/api/chat/stream?message=hi&model=sim/fast", headers=headers)
    assert r.status_code == status
    if status == 403:
        assert r.json()["error"]["type"] == "cross_site"


async def test_a_configured_origin_may_start_by_get_and_anyone_may_resume() -> None:
    settings = quick_settings().with_changes(server={"cors_origins": ["https://app.test"]})
    app = create_app(settings)
    cross = {"sec-fetch-site": "cross-site"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.get(
            "/api/chat/stream?message=hi&model=sim/fast",
            headers={**cross, "origin": "https://app.test"},
        )
        assert r.status_code == 200
        first_id = next(line for line in r.text.splitlines() if line.startswith("id: "))[4:]
        resumed = await c.get("/api/chat/stream", headers={**cross, "last-event-id": first_id})
        assert resumed.status_code == 200
