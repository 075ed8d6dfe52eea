"""`POST /api/chat/stream` served past Starlette's stack (server/direct.py), and when it is not."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import SentBy, post_stream_recording_callers, quick_settings, sse_events
from tokenrelay.server.app import create_app
from tokenrelay.server.responses import EventStreamResponse

pytestmark = pytest.mark.anyio


async def test_the_stream_route_skips_starlettes_stack(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tokenrelay.http")
    (caller, start), *body = await post_stream_recording_callers(create_app(quick_settings()))
    assert caller == "tokenrelay.server.middleware"  # the request id's send, and nothing else
    request_id = dict(start["headers"])[b"x-request-id"].decode()
    assert f"{request_id} POST /api/chat/stream -> 200" in caplog.text
    events = sse_events(b"".join(m.get("body", b"") for _, m in body))
    assert [e["type"] for e in events] == ["start", *["token"] * 5, "done"]


_MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("route", "extra"), [("/v1/chat/completions", {}), ("/v1/messages", {"max_tokens": 5})]
)
async def test_the_compatible_streaming_routes_skip_starlettes_stack_too(
    route: str, extra: dict[str, Any]
) -> None:
    body = {"model": "sim/fast", "messages": _MESSAGES, "stream": True, **extra}
    sent = await post_stream_recording_callers(create_app(quick_settings()), route=route, body=body)
    (caller, start), *rest = sent
    assert caller == "tokenrelay.server.middleware"  # the request id's send, and nothing else
    assert start["status"] == 200
    assert dict(start["headers"])[b"x-request-id"].startswith(b"req_")
    text = b"".join(m.get("body", b"") for _, m in rest)
    assert text.count(b"data: ") >= 5  # the dialect's own chunks, every token


async def test_the_eventsource_get_skips_starlettes_stack_too() -> None:
    app = create_app(quick_settings())
    query = b"message=hi&model=sim%2Ffast&max_tokens=5"
    (caller, start), *body = await post_stream_recording_callers(app, method="GET", query=query)
    assert caller == "tokenrelay.server.middleware"
    assert start["status"] == 200
    events = sse_events(b"".join(m.get("body", b"") for _, m in body))
    assert [e["type"] for e in events] == ["start", *["token"] * 5, "done"]


async def test_attaching_to_a_stream_skips_starlettes_stack_too() -> None:
    app = create_app(quick_settings())
    (_, start), *body = await post_stream_recording_callers(app)
    stream_id = dict(start["headers"])[b"x-stream-id"].decode()
    events = sse_events(b"".join(m.get("body", b"") for _, m in body))
    route, last = f"/api/streams/{stream_id}", f"{stream_id}:3".encode()
    (caller, start), *body = await post_stream_recording_callers(
        app, method="GET", route=route, headers=((b"last-event-id", last),)
    )
    assert caller == "tokenrelay.server.middleware"
    assert sse_events(b"".join(m.get("body", b"") for _, m in body)) == events[3:]
    for route in ("/api/streams/", f"/api/streams/{stream_id}/x"):  # the router's 404s
        (caller, start), *_ = await post_stream_recording_callers(app, method="GET", route=route)
        assert start["status"] == 404


async def test_a_mounted_app_is_routed_by_starlette() -> None:
    app = create_app(quick_settings())
    (caller, start), *_ = await post_stream_recording_callers(app, root_path="/relay")
    assert caller.startswith("starlette.")
    assert start["status"] == 200
    assert dict(start["headers"])[b"x-request-id"].startswith(b"req_")


async def test_a_failure_before_the_start_is_a_500_and_is_raised_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(self: EventStreamResponse, send: object, send_body: object) -> bool:
        raise RuntimeError("api_key=sk-secret-1 in a bug")

    monkeypatch.setattr(EventStreamResponse, "_respond", broken)
    sent: SentBy = []
    with pytest.raises(RuntimeError):  # on to the server, which logs it and closes
        await post_stream_recording_callers(create_app(quick_settings()), into=sent)
    (_, start), (_, body) = sent
    assert start["status"] == 500
    error = orjson.loads(body["body"])["error"]
    assert error["type"] == "internal_error"
    assert "secret" not in body["body"].decode()
    assert error["request_id"] in caplog.text


async def test_a_failure_after_the_start_sends_nothing_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(self: EventStreamResponse, send: object, after: int) -> bool:
        raise RuntimeError("a bug mid-stream")

    monkeypatch.setattr(EventStreamResponse, "_pump", broken)
    sent: SentBy = []
    with pytest.raises(RuntimeError):
        await post_stream_recording_callers(create_app(quick_settings()), into=sent)
    starts = [m for _, m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [200]  # no second start: the server will close


async def test_the_request_line_names_the_stream_in_every_dialect(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tokenrelay")
    body = {"model": "sim/fast", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    response = await client.post("/v1/chat/completions", json=body)
    stream_id, request_id = response.headers["x-stream-id"], response.headers["x-request-id"]
    lines = [r.getMessage() for r in caplog.records if request_id in r.getMessage()]
    assert lines == [
        f"{request_id} POST /v1/chat/completions -> 200, stream {stream_id} (sim/fast)"
    ]
