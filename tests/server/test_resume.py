"""Resume by Last-Event-ID: every later event exactly once, in order; nothing regenerated."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from tests.conftest import AsgiExchange, drive, quick_settings, sse_events
from tokenrelay.server.app import create_app

pytestmark = pytest.mark.anyio


async def _finished_stream(client: httpx.AsyncClient, tokens: int = 20) -> list[dict[str, Any]]:
    body = {"message": "Explain TCP", "model": "sim/fast", "max_tokens": tokens}
    return sse_events((await client.post("/api/chat/stream", json=body)).content)


@pytest.mark.parametrize("how", ["header", "query"])
async def test_resume_replays_exactly_the_later_events(client: httpx.AsyncClient, how: str) -> None:
    events = await _finished_stream(client)
    stream_id = events[0]["stream_id"]
    cut = f"{stream_id}:6"
    if how == "header":
        r = await client.get(f"/api/streams/{stream_id}", headers={"last-event-id": cut})
    else:
        r = await client.get(f"/api/streams/{stream_id}", params={"last_event_id": cut})
    assert r.status_code == 200
    assert sse_events(r.content) == events[6:]


async def test_eventsource_reconnect_on_the_chat_url_resumes(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tokenrelay.http")
    events = await _finished_stream(client)
    stream_id = events[0]["stream_id"]
    r = await client.get(
        "/api/chat/stream",
        params={"message": "Explain TCP"},
        headers={"last-event-id": f"{stream_id}:3"},
    )
    assert r.headers["x-stream-id"] == stream_id  # the same stream, not a new one
    assert sse_events(r.content) == events[3:]
    request_line = f"{r.headers['x-request-id']} GET /api/chat/stream -> 200, stream {stream_id}"
    assert request_line in caplog.text  # its request line says which stream it follows


async def test_resume_after_the_ending_is_204(client: httpx.AsyncClient) -> None:
    events = await _finished_stream(client)
    last = events[-1]["_id"]
    stream_id = events[0]["stream_id"]
    for url in [f"/api/streams/{stream_id}", "/api/chat/stream?message=x"]:
        r = await client.get(url, headers={"last-event-id": last})
        assert r.status_code == 204
        assert r.content == b""


@pytest.mark.parametrize(
    "bad",
    [
        "nonsense",
        "str_abc",
        "str_aaaaaaaaaaaaaaaaaaaaaa:x",
        "str_aaaaaaaaaaaaaaaaaaaaaa:-1",
        "x" * 500,
    ],
)
async def test_malformed_event_ids_are_400(client: httpx.AsyncClient, bad: str) -> None:
    r = await client.get("/api/chat/stream?message=x", headers={"last-event-id": bad})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_event_id"


async def test_event_id_of_another_stream_or_from_the_future_is_400(
    client: httpx.AsyncClient,
) -> None:
    first, second = await _finished_stream(client), await _finished_stream(client)
    r = await client.get(
        f"/api/streams/{first[0]['stream_id']}", headers={"last-event-id": second[2]["_id"]}
    )
    assert r.status_code == 400
    future = f"{first[0]['stream_id']}:999"
    r = await client.get(f"/api/streams/{first[0]['stream_id']}", headers={"last-event-id": future})
    assert r.status_code == 400


async def test_unknown_stream_is_404_and_expired_is_410() -> None:
    app = create_app(quick_settings(ttl=0.05))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.get(
            "/api/streams/str_neverexistedneverexisted",
            headers={"last-event-id": "str_neverexistedneverexisted:1"},
        )
        assert r.status_code == 404
        events = await _finished_stream(c, tokens=3)
        await asyncio.sleep(0.1)
        r = await c.get(
            f"/api/streams/{events[0]['stream_id']}", headers={"last-event-id": events[1]["_id"]}
        )
        assert r.status_code == 410
        assert r.json()["error"]["type"] == "stream_expired"


async def test_resume_while_live_after_a_drop_loses_and_doubles_nothing() -> None:
    """Tokens keep coming (detach) while nobody listens; the resume catches up, then follows."""
    app = create_app(quick_settings(resume_window=10.0))
    first = AsgiExchange()
    body = orjson.dumps(
        {
            "message": "Explain TCP",
            "model": "sim/default",
            "max_tokens": 60,
            "on_disconnect": "detach",
        }
    )
    task = asyncio.create_task(drive(app, first, "POST", "/api/chat/stream", body))
    await asyncio.sleep(0.05)
    first.disconnect.set()
    await asyncio.wait_for(task, 1.0)
    before = sse_events(first.body)
    stream_id = before[0]["stream_id"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.get(f"/api/streams/{stream_id}", headers={"last-event-id": before[-1]["_id"]})
    after = sse_events(r.content)
    combined = before + after
    assert [e["_id"] for e in combined] == [f"{stream_id}:{i}" for i in range(1, len(combined) + 1)]
    assert combined[-1]["type"] == "done"
    assert combined[-1]["token_count"] == 60
    assert sum(e["type"] == "start" for e in combined) == 1  # one generation, not two


async def test_two_tabs_follow_one_stream(app: Starlette) -> None:
    tab1, tab2 = AsgiExchange(), AsgiExchange()
    body = orjson.dumps({"message": "x", "model": "sim/default", "max_tokens": 30})
    first = asyncio.create_task(drive(app, tab1, "POST", "/api/chat/stream", body))
    await asyncio.wait_for(tab1.started.wait(), 2.0)
    stream_id = tab1.header("x-stream-id")
    second = asyncio.create_task(drive(app, tab2, "GET", f"/api/streams/{stream_id}", b""))
    await asyncio.wait_for(asyncio.gather(first, second), 5.0)
    assert sse_events(tab1.body) == sse_events(tab2.body)
    assert sse_events(tab1.body)[-1]["type"] == "done"
