"""The fast writer (server/uvicorn_writer.py) against a real uvicorn, and only there.

These run uvicorn (httptools) in process with the whole app: they fail if a uvicorn release
changes the connection state the writer reads, or frames chunks differently.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from tests.conftest import quick_settings, sse_events
from tests.realserver import free_port
from tokenrelay.server import uvicorn_writer
from tokenrelay.server.app import create_app

pytestmark = pytest.mark.anyio

BODY = {"message": "hi", "model": "sim/fast", "max_tokens": 20}


@asynccontextmanager
async def uvicorn_serving(app: Any) -> AsyncIterator[str]:
    port = free_port()
    config = uvicorn.Config(app, port=port, http="httptools", ws="none", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # uvicorn.Server offers a flag, no event
        if task.done():
            task.result()  # its failure, if it failed
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
def body_sends(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The bodies that go through uvicorn's own ASGI `send`."""
    seen: list[bytes] = []
    original = RequestResponseCycle.send

    async def counting(self: RequestResponseCycle, message: Message) -> None:
        if message["type"] == "http.response.body":
            seen.append(message.get("body", b""))
        await original(self, message)  # type: ignore[arg-type]  # uvicorn's typed dicts

    monkeypatch.setattr(RequestResponseCycle, "send", counting)
    return seen


async def stream_through(app: Any) -> httpx.Response:
    async with uvicorn_serving(app) as url, httpx.AsyncClient() as client:
        return await client.post(f"{url}/api/chat/stream", json=BODY)


def test_the_installed_uvicorn_passes_the_start_up_check() -> None:
    assert uvicorn_writer.available()


async def test_live_tokens_go_straight_to_uvicorns_transport(body_sends: list[bytes]) -> None:
    response = await stream_through(create_app(quick_settings()))
    assert response.headers["transfer-encoding"] == "chunked"
    events = sse_events(response.content)
    assert [e["type"] for e in events] == ["start", *["token"] * 20, "done"]
    # The start event and at most a few early ones may be replayed through `send` (the
    # subscription writes what the log already holds that way only if the socket is full);
    # the live tokens are not, and the body's end is.
    assert body_sends[-1] == b""
    assert sum(body.count(b'"type":"token"') for body in body_sends) < 20


class PassingOn:
    """A user's middleware that passes each message on through a `send` of its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def passing_on(message: Message) -> None:
            await send(message)

        await self.app(scope, receive, passing_on)


async def test_behind_a_users_middleware_every_token_goes_through_send(
    body_sends: list[bytes],
) -> None:
    app = create_app(quick_settings())
    app.add_middleware(PassingOn)
    response = await stream_through(app)
    assert b"".join(body_sends) == response.content
    assert sse_events(response.content)[-1]["token_count"] == 20


async def test_when_the_check_fails_every_token_goes_through_send(
    body_sends: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uvicorn_writer, "available", lambda: False)
    response = await stream_through(create_app(quick_settings()))
    assert b"".join(body_sends) == response.content
    assert sse_events(response.content)[-1]["token_count"] == 20


async def test_only_uvicorns_own_send_is_written_past() -> None:
    async def send(message: Message) -> None:
        pass

    assert uvicorn_writer.cycle_of(send) is None


class FakeCycle:
    """uvicorn's per-request state, as much of it as the writer reads."""

    class Flow:
        write_paused = True

    class Transport:
        def __init__(self) -> None:
            self.written: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.written.append(data)

    def __init__(self) -> None:
        self.flow = self.Flow()
        self.transport = self.Transport()
        self.disconnected = False


async def test_regression_a_write_during_a_drain_does_not_overtake_it() -> None:
    """The drain took the held bytes out before its send returned, so a token written once
    the socket drained went to the transport ahead of them."""
    cycle = FakeCycle()
    release = asyncio.Event()

    async def send(message: Message) -> None:  # uvicorn's send, waiting for the socket
        await release.wait()
        cycle.transport.write(message["body"])

    writer = uvicorn_writer.UvicornWriter(send, cycle)
    assert not writer.write_now(b"A")  # the socket is full: held
    draining = asyncio.create_task(writer.drain())
    await asyncio.sleep(0)
    cycle.flow.write_paused = False  # the socket drained, before the send resumed
    assert not writer.write_now(b"B")  # still behind A: held, not written
    release.set()
    await draining
    assert b"".join(cycle.transport.written) == b"AB"
