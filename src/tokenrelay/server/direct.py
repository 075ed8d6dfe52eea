"""The streaming routes straight from the server, past Starlette's middleware and routing.

`POST /api/chat/stream` (and its `GET`, for EventSource), `POST /v1/chat/completions`,
`POST /v1/messages` and `GET /api/streams/{id}` (attach, resume) are the routes that live as
long as a stream: every frame and closure on
their way in stays in memory until the answer ends. Through Starlette's stack that was 5.9 KB
per open stream, a sixth of the whole, and a share of each request's CPU
(benchmarks/RESULTS.md, `bench_memory`; a /v1 request cost about 10% more CPU than a native
one before it came this way too). Here the same handlers run with what the stack gave them,
done inline:

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

from tokenrelay.server import routes_compat
from tokenrelay.server.middleware import IdentifiedSend, begin_request
from tokenrelay.server.routes_native import attach_stream, chat_stream_get, chat_stream_post

ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]

# (method, path): the same endpoints as the routes for them (routes_native, routes_compat) use.
Endpoints = dict[tuple[str, str], Endpoint]
ENDPOINTS: Endpoints = {
    ("POST", "/api/chat/stream"): chat_stream_post,
    ("GET", "/api/chat/stream"): chat_stream_get,
    ("POST", "/v1/chat/completions"): routes_compat.chat_completions,
    ("POST", "/v1/messages"): routes_compat.messages,
}


_ATTACH = "/api/streams/"  # GET /api/streams/{stream_id}


def endpoint_for(scope: Scope, endpoints: Endpoints) -> Endpoint | None:
    """The endpoint to serve a request directly with, if it is one of the streaming routes."""
    if scope["type"] != "http" or scope.get("root_path"):
        return None  # (mounted under a prefix: let the router match it)
    method, path = scope["method"], scope["path"]
    endpoint = endpoints.get((method, path))
    if endpoint is None and method == "GET" and path.startswith(_ATTACH):
        stream_id = path[len(_ATTACH) :]
        if stream_id and "/" not in stream_id:  # what the route's {stream_id} matches
            scope["path_params"] = {"stream_id": stream_id}
            return attach_stream
    return endpoint


async def serve(
    scope: Scope, receive: Receive, send: Send, handle_error: ErrorHandler, endpoint: Endpoint
) -> None:
    """Serve the request with `endpoint`, as the routes and middleware would."""
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
