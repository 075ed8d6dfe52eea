"""Event-stream bodies go straight to the server's `send`, past the middleware (`body_send`).

That is safe only while every middleware on the stack leaves body messages alone; these tests
fail when one that does not is added, or when the start stops going through the middleware.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from starlette.middleware.cors import CORSMiddleware

from tests.conftest import post_stream_recording_callers, quick_settings, sse_events
from tokenrelay.server.app import create_app
from tokenrelay.server.middleware import RequestIdMiddleware

pytestmark = pytest.mark.anyio

# Middleware known to act on `http.response.start` only. A new one must be checked (does it
# read or rewrite bodies?) before it joins this list.
START_ONLY = {RequestIdMiddleware, CORSMiddleware}


def _settings_with_cors() -> Any:
    base = quick_settings()
    return replace(base, server=replace(base.server, cors_origins=("https://app.example",)))


def test_every_middleware_leaves_bodies_alone() -> None:
    app = create_app(_settings_with_cors())
    assert {m.cls for m in app.user_middleware} <= START_ONLY


async def test_tokens_skip_the_middleware_and_the_start_does_not() -> None:
    app = create_app(_settings_with_cors())
    origin = ((b"origin", b"https://app.example"),)
    sent = await post_stream_recording_callers(app, headers=origin)

    (start_caller, start), *body = sent
    headers = dict(start["headers"])
    assert start_caller.startswith("starlette.")  # through the middleware stack
    assert headers[b"x-request-id"].startswith(b"req_")  # RequestIdMiddleware saw it
    assert headers[b"access-control-allow-origin"] == b"https://app.example"  # so did CORS
    assert {caller for caller, _ in body} <= {
        "tokenrelay.server.responses",
        "tokenrelay.server.eager_send",
    }
    events = sse_events(b"".join(m.get("body", b"") for _, m in body))
    assert events[-1]["type"] == "done"
    assert events[-1]["token_count"] == 5
