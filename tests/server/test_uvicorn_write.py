"""Live tokens go straight to uvicorn's transport (server/uvicorn_write.py), and only there.

These run a real uvicorn (httptools) in process: they fail if a uvicorn release changes the
connection state that the direct write relies on, or frames chunks differently.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.types import Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from tests.realserver import free_port
from tokenrelay.events import token_event
from tokenrelay.server.live import LiveWriter
from tokenrelay.server.uvicorn_write import direct_cycle
from tokenrelay.wire.native import NativeEncoder

pytestmark = pytest.mark.anyio

SID = "str_direct"
TOKENS = [token_event(seq, text) for seq, text in enumerate(["Hel", "lo", " world"], 2)]


async def live_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Writes three tokens through a LiveWriter, then ends the body through `send`."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    live = LiveWriter(send, NativeEncoder(SID))
    live.start(1)
    assert all(live.push(event) for event in TOKENS)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def wrapped(app: Callable[[Scope, Receive, Send], Any]) -> Callable[[Scope, Receive, Send], Any]:
    """A middleware around the app, passing each message on through a `send` of its own."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        async def passing_on(message: Message) -> None:
            await send(message)

        await app(scope, receive, passing_on)

    return middleware


@asynccontextmanager
async def uvicorn_serving(app: Any) -> AsyncIterator[str]:
    port = free_port()
    config = uvicorn.Config(app, port=port, http="httptools", log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn.Server offers a flag, no event)
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


async def test_live_tokens_go_straight_to_uvicorns_transport(body_sends: list[bytes]) -> None:
    async with uvicorn_serving(live_app) as url, httpx.AsyncClient() as client:
        response = await client.get(url)
    encoder = NativeEncoder(SID)
    assert response.content == b"".join(encoder.encode_one(event) for event in TOKENS)
    assert response.headers["transfer-encoding"] == "chunked"
    assert body_sends == [b""]  # only the end went through `send`


async def test_behind_a_middleware_every_token_goes_through_send(body_sends: list[bytes]) -> None:
    async with uvicorn_serving(wrapped(live_app)) as url, httpx.AsyncClient() as client:
        response = await client.get(url)
    encoded = [NativeEncoder(SID).encode_one(event) for event in TOKENS]
    assert response.content == b"".join(encoded)
    assert body_sends == [*encoded, b""]


async def test_only_uvicorns_own_send_is_written_past() -> None:
    async def send(message: Message) -> None:
        pass

    assert direct_cycle(send) is None
