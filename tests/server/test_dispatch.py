"""The streaming routes served by the dispatcher (server/dispatch.py), and a user's additions
honoured on them: middleware sees their bodies, exception handlers answer their errors."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import httpx
import orjson
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.conftest import (
    ExplodingProvider,
    SentBy,
    post_stream_recording_callers,
    quick_settings,
    sse_events,
)
from tokenrelay.errors import UnknownModel
from tokenrelay.server.app import create_app
from tokenrelay.server.dispatch import Dispatcher
from tokenrelay.server.responses import EventStreamResponse

pytestmark = pytest.mark.anyio

# Who may call the server's `send` on the dispatcher's path: the request id's wrapper (the
# start, the body's end) and the writer (the body).
OURS = {"tokenrelay.server.middleware", "tokenrelay.server.asgi_writer"}
_MESSAGES = [{"role": "user", "content": "hi"}]


def body_of(sent: SentBy) -> bytes:
    return b"".join(m.get("body", b"") for _, m in sent if m["type"] == "http.response.body")


async def test_the_stream_route_skips_starlettes_stack(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tokenrelay.http")
    sent = await post_stream_recording_callers(create_app(quick_settings()))
    assert {caller for caller, _ in sent} <= OURS
    start = sent[0][1]
    request_id = dict(start["headers"])[b"x-request-id"].decode()
    assert f"{request_id} POST /api/chat/stream -> 200" in caplog.text
    events = sse_events(body_of(sent))
    assert [e["type"] for e in events] == ["start", *["token"] * 5, "done"]


@pytest.mark.parametrize(
    ("route", "extra"), [("/v1/chat/completions", {}), ("/v1/messages", {"max_tokens": 5})]
)
async def test_the_compatible_streaming_routes_skip_starlettes_stack_too(
    route: str, extra: dict[str, Any]
) -> None:
    body = {"model": "sim/fast", "messages": _MESSAGES, "stream": True, **extra}
    sent = await post_stream_recording_callers(create_app(quick_settings()), route=route, body=body)
    assert {caller for caller, _ in sent} <= OURS
    start = sent[0][1]
    assert start["status"] == 200
    assert dict(start["headers"])[b"x-request-id"].startswith(b"req_")
    assert body_of(sent).count(b"data: ") >= 5  # the dialect's own chunks, every token


async def test_the_eventsource_get_and_attaching_skip_starlettes_stack_too() -> None:
    app = create_app(quick_settings())
    query = b"message=hi&model=sim%2Ffast&max_tokens=5"
    sent = await post_stream_recording_callers(app, method="GET", query=query)
    assert {caller for caller, _ in sent} <= OURS
    events = sse_events(body_of(sent))
    assert [e["type"] for e in events] == ["start", *["token"] * 5, "done"]
    stream_id = dict(sent[0][1]["headers"])[b"x-stream-id"].decode()
    route, last = f"/api/streams/{stream_id}", f"{stream_id}:3".encode()
    sent = await post_stream_recording_callers(
        app, method="GET", route=route, headers=((b"last-event-id", last),)
    )
    assert {caller for caller, _ in sent} <= OURS
    assert sse_events(body_of(sent)) == events[3:]
    for route in ("/api/streams/", f"/api/streams/{stream_id}/x"):  # the router's 404s
        sent = await post_stream_recording_callers(app, method="GET", route=route)
        assert sent[0][1]["status"] == 404


@pytest.fixture
def served_directly(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the dispatcher served itself, past Starlette's stack."""
    paths: list[str] = []
    serve = Dispatcher._serve

    async def recording(self: Dispatcher, scope: Scope, *args: Any) -> None:
        paths.append(scope["path"])
        await serve(self, scope, *args)

    monkeypatch.setattr(Dispatcher, "_serve", recording)
    return paths


async def test_a_mounted_app_is_routed_by_starlette(served_directly: list[str]) -> None:
    app = create_app(quick_settings())
    sent = await post_stream_recording_callers(app, root_path="/relay")
    assert served_directly == []
    await post_stream_recording_callers(app)
    assert served_directly == ["/api/chat/stream"]
    start = sent[0][1]
    assert start["status"] == 200
    assert dict(start["headers"])[b"x-request-id"].startswith(b"req_")


class BodyRecorder:
    """A user's middleware: marks the response start and keeps every body it passes on."""

    bodies: ClassVar[list[bytes]] = []

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message["headers"], (b"x-seen-by", b"recorder")]
            else:
                BodyRecorder.bodies.append(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, recording)


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/api/chat/stream", {"message": "hi", "model": "sim/fast", "max_tokens": 5}),
        ("/v1/chat/completions", {"model": "sim/fast", "messages": _MESSAGES, "stream": True}),
    ],
)
async def test_a_middleware_added_by_the_user_sees_streaming_bodies(
    route: str, body: dict[str, Any], served_directly: list[str]
) -> None:
    app = create_app(quick_settings())
    app.add_middleware(BodyRecorder)
    BodyRecorder.bodies = []
    sent = await post_stream_recording_callers(app, route=route, body=body)
    assert served_directly == []
    assert dict(sent[0][1]["headers"])[b"x-seen-by"] == b"recorder"
    assert dict(sent[0][1]["headers"])[b"x-request-id"].startswith(b"req_")
    assert b"".join(BodyRecorder.bodies) == body_of(sent)  # every byte passed through it
    assert body_of(sent).count(b"data: ") >= 5


async def test_cors_from_the_settings_sees_streaming_responses() -> None:
    app = create_app(
        quick_settings().with_changes(server={"cors_origins": ["https://app.example"]})
    )
    sent = await post_stream_recording_callers(app, headers=((b"origin", b"https://app.example"),))
    headers = dict(sent[0][1]["headers"])
    assert headers[b"access-control-allow-origin"] == b"https://app.example"
    assert sse_events(body_of(sent))[-1]["type"] == "done"


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/api/chat/stream", {"message": "hi", "model": "nobody/nothing"}),
        ("/v1/chat/completions", {"model": "nobody/nothing", "messages": _MESSAGES}),
        ("/v1/messages", {"model": "nobody/nothing", "messages": _MESSAGES, "max_tokens": 5}),
    ],
)
async def test_an_exception_handler_added_by_the_user_answers_streaming_routes(
    route: str, body: dict[str, Any]
) -> None:
    async def teapot(request: Request, exc: Exception) -> Response:
        return JSONResponse({"mine": type(exc).__name__}, status_code=418)

    app = create_app(quick_settings())
    app.add_exception_handler(UnknownModel, teapot)
    sent = await post_stream_recording_callers(app, route=route, body=body)
    assert sent[0][1]["status"] == 418
    assert orjson.loads(body_of(sent)) == {"mine": "UnknownModel"}


async def test_a_failure_before_the_start_is_a_500_and_is_raised_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(self: EventStreamResponse, send: object) -> bool:
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
    async def broken(self: object) -> bool:
        raise RuntimeError("a bug mid-stream")

    monkeypatch.setattr("tokenrelay.streams.subscription.Subscription.run", broken)
    sent: SentBy = []
    with pytest.raises(RuntimeError):
        await post_stream_recording_callers(create_app(quick_settings()), into=sent)
    starts = [m for _, m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [200]  # no second start: the server will close


async def test_the_request_line_names_the_stream_in_every_dialect(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tokenrelay")
    body = {"model": "sim/fast", "messages": _MESSAGES, "stream": True}
    response = await client.post("/v1/chat/completions", json=body)
    stream_id, request_id = response.headers["x-stream-id"], response.headers["x-request-id"]
    lines = [r.getMessage() for r in caplog.records if request_id in r.getMessage()]
    assert lines == [
        f"{request_id} POST /v1/chat/completions -> 200, stream {stream_id} (sim/fast)"
    ]


class AsyncCallableHandler:
    """A handler that is an object with an async `__call__` (Starlette accepts these)."""

    async def __call__(self, request: Request, exc: Exception) -> Response:
        return JSONResponse({"mine": "500"}, status_code=599)


async def test_a_handler_for_500_answers_unexpected_errors_and_the_error_is_raised_on() -> None:
    app = create_app(quick_settings(), providers=[ExplodingProvider()])
    app.add_exception_handler(500, AsyncCallableHandler())
    sent: SentBy = []
    body = {"message": "hi", "model": "boom/x"}
    with pytest.raises(RuntimeError, match="a bug"):  # on to the server, as Starlette does
        await post_stream_recording_callers(app, body=body, into=sent)
    assert sent[0][1]["status"] == 599
    assert orjson.loads(body_of(sent)) == {"mine": "500"}


async def test_an_error_its_handler_answered_is_not_raised_on() -> None:
    app = create_app(quick_settings())
    sent = await post_stream_recording_callers(
        app, method="GET", route="/api/streams/str_AAAAAAAAAAAAAAAAAAAAAA"
    )
    assert sent[0][1]["status"] == 404
    assert orjson.loads(body_of(sent))["error"]["type"] == "unknown_stream"


async def test_until_disconnect_returns_none_when_the_client_goes_and_keeps_an_outside_cancel() -> (
    None
):
    from tokenrelay.server.responses import until_disconnect

    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def forever() -> int:
        await asyncio.sleep(10)
        return 1

    async def quick() -> int:
        return 7

    assert await until_disconnect(receive, quick()) == 7
    task = asyncio.create_task(until_disconnect(receive, forever()))
    await asyncio.sleep(0.01)
    gone.set()
    assert await task is None
    # The client leaves and someone cancels the caller in the same step: still a cancel.
    gone.clear()
    task = asyncio.create_task(until_disconnect(receive, forever()))
    await asyncio.sleep(0.01)
    gone.set()
    await asyncio.sleep(0)  # the listener runs first: the task group cancels the caller...
    task.cancel()  # ... and so does someone else, before the caller runs again
    with pytest.raises(asyncio.CancelledError):
        await task

    async def broken_receive() -> dict[str, Any]:
        raise OSError("the connection broke")

    assert await until_disconnect(broken_receive, forever()) is None  # gone all the same
