"""Shared fixtures: an in-process app and client, SSE parsing, and a raw ASGI driver."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import settings as hypothesis_settings
from starlette.applications import Starlette

from tests.mock_fixture import mock as mock  # a session fixture for every test directory
from tests.services import redis_cluster, redis_server
from tokenrelay.providers.base import Delta, GenerationRequest, Provider
from tokenrelay.server.app import create_app
from tokenrelay.settings import Settings
from tokenrelay.sse import SSEDecoder

# Wall-clock deadlines per example only measure how busy a shared 2-core machine is.
hypothesis_settings.register_profile("tokenrelay", deadline=None, max_examples=200)
hypothesis_settings.load_profile("tokenrelay")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def quick_settings(**streams: Any) -> Settings:
    """Defaults, with the sim's default timing made quick so tests do not wait for it."""
    return Settings().with_changes(
        sim={"ttft": 0.01, "tokens_per_second": 500.0},
        streams={"commit_deadline": 0.05, "retry_base_delay": 0.01, **streams},
    )


@pytest.fixture
def app() -> Starlette:
    return create_app(quick_settings())


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tokenrelay.test") as c:
        yield c


def sse_events(body: bytes) -> list[dict[str, Any]]:
    """Decode an SSE body into payload dicts, each with its event id under `_id`."""
    decoder = SSEDecoder()
    events = decoder.feed(body) + decoder.close()
    return [{**orjson.loads(e.data), "_id": e.id} for e in events]


@dataclass
class AsgiExchange:
    """What an app sent back when driven directly, with control over `http.disconnect`."""

    messages: list[MutableMapping[str, Any]] = field(default_factory=list)
    disconnect: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])

    def header(self, name: str) -> str | None:
        for key, value in self.messages[0]["headers"]:
            if key.decode() == name:
                return str(value.decode())
        return None


async def drive(
    app: Starlette, exchange: AsgiExchange, method: str, path: str, body: bytes
) -> None:
    """Call the app as a server would; `exchange.disconnect.set()` makes the client leave."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"tokenrelay.test")],
        "client": ("127.0.0.1", 5000),
        "server": ("tokenrelay.test", 80),
        "state": {},
    }
    sent_body = False

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await exchange.disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        exchange.messages.append(message)
        exchange.started.set()

    await app(scope, receive, send)


SentBy = list[tuple[str, MutableMapping[str, Any]]]  # (the module that called send, the message)


async def post_stream_recording_callers(
    app: Starlette,
    *,
    root_path: str = "",
    headers: tuple[tuple[bytes, bytes], ...] = (),
    into: SentBy | None = None,
    route: str = "/api/chat/stream",
    body: dict[str, Any] | None = None,
    method: str = "POST",
    query: bytes = b"",
) -> SentBy:
    """POST a 5-token sim stream as a server would; each message with the module that sent it
    (who called the server's `send`: the middleware, or the response itself). `into` keeps
    what was sent when the app raises."""
    sent: SentBy = [] if into is None else into
    bodies = [orjson.dumps(body or {"message": "hi", "model": "sim/fast", "max_tokens": 5})]

    async def receive() -> dict[str, Any]:
        if bodies:
            return {"type": "http.request", "body": bodies.pop(), "more_body": False}
        await asyncio.Event().wait()  # the client stays
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append((sys._getframe(1).f_globals["__name__"], message))

    path = f"{root_path}{route}"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": root_path,
        "headers": [(b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("tokenrelay.test", 80),
    }
    await app(scope, receive, send)
    return sent


class ExplodingProvider(Provider):
    """`boom/x`: resolving the model raises a bug's exception, with a secret in its text."""

    name = "boom"

    def models(self) -> list[str]:
        return ["x"]

    def supports(self, model: str) -> bool:
        raise RuntimeError("a bug: api_key=sk-secret-123 leaked?")

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        yield Delta()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Three redis-server processes joined in a cluster; one node's URL."""
    with redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as url:
        yield url
