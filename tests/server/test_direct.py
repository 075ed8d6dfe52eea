"""`POST /api/chat/stream` served past Starlette's stack (server/direct.py), and when it is not."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import pytest

from tests.conftest import quick_settings, sse_events
from tokenrelay.server.app import create_app

pytestmark = pytest.mark.anyio

Sent = list[tuple[str, MutableMapping[str, Any]]]  # (the module that called send, the message)


async def _post_stream(root_path: str = "") -> Sent:
    app = create_app(quick_settings())
    sent: Sent = []
    bodies = [orjson.dumps({"message": "hi", "model": "sim/fast", "max_tokens": 3})]

    async def receive() -> dict[str, Any]:
        if bodies:
            return {"type": "http.request", "body": bodies.pop(), "more_body": False}
        await asyncio.Event().wait()  # the client stays
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append((sys._getframe(1).f_globals["__name__"], message))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"{root_path}/api/chat/stream",
        "raw_path": f"{root_path}/api/chat/stream".encode(),
        "query_string": b"",
        "root_path": root_path,
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000),
        "server": ("tokenrelay.test", 80),
    }
    await app(scope, receive, send)
    return sent


async def test_the_stream_route_skips_starlettes_stack(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tokenrelay.http")
    (caller, start), *body = await _post_stream()
    assert caller == "tokenrelay.server.middleware"  # the request id's send, and nothing else
    request_id = dict(start["headers"])[b"x-request-id"].decode()
    assert f"{request_id} POST /api/chat/stream -> 200" in caplog.text
    events = sse_events(b"".join(m.get("body", b"") for _, m in body))
    assert [e["type"] for e in events] == ["start", "token", "token", "token", "done"]


async def test_a_mounted_app_is_routed_by_starlette() -> None:
    (caller, start), *_ = await _post_stream(root_path="/relay")
    assert caller.startswith("starlette.")
    assert start["status"] == 200
    assert dict(start["headers"])[b"x-request-id"].startswith(b"req_")
