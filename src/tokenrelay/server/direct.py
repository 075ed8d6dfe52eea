"""`POST /api/chat/stream` straight from the server, past Starlette's middleware and routing.

It is the one route that lives as long as a stream: every frame and closure on its way in
stays in memory until the answer ends. Through Starlette's stack that was 5.9 KB per open
stream, a sixth of the whole, and a share of each request's CPU (benchmarks/RESULTS.md,
`bench_memory`). Here the same handler runs with what the stack gave it, done inline:

    request id      the same `x-request-id` header, log line and log context
    errors          the app's own exception handlers, so the same JSON bodies and statuses;
                    a failure after the response started is logged and re-raised (the server
                    then closes the connection), as Starlette's error middleware does

CORS needs its middleware, so with `cors_origins` set the route goes through Starlette.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tokenrelay.server.middleware import IdentifiedSend, begin_request
from tokenrelay.server.routes_native import chat_stream_post

ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]

PATH = "/api/chat/stream"


def is_direct(scope: Scope) -> bool:
    """Whether a request is the streaming POST this module serves."""
    return (
        scope["type"] == "http"
        and scope["path"] == PATH
        and scope["method"] == "POST"
        and not scope.get("root_path")  # mounted under a prefix: let the router match it
    )


async def chat_stream(
    scope: Scope,
    receive: Receive,
    send: Send,
    handle_error: ErrorHandler,
    endpoint: Endpoint = chat_stream_post,
) -> None:
    """Serve the request with `endpoint` (the native route's; a benchmark swaps in its own)."""
    identified = IdentifiedSend(scope, send, begin_request(scope))
    request = Request(scope, receive)
    try:
        response = await endpoint(request)
    except Exception as exc:
        response = await handle_error(request, exc)
    try:
        await response(scope, receive, identified)
    except Exception as exc:
        if not identified.started:
            await (await handle_error(request, exc))(scope, receive, identified)
        raise
