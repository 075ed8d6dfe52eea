"""The streaming routes straight from the server, past Starlette's middleware and routing.

`POST /api/chat/stream` (and its `GET`, for EventSource), `POST /v1/chat/completions`,
`POST /v1/messages` and `GET /api/streams/{id}` (attach, resume) are the routes that live as
long as a stream: every frame and closure on their way in stays in memory until the answer
ends. Through Starlette's stack that was 5.9 KB per open stream, a sixth of the whole, and a
share of each request's CPU (benchmarks/RESULTS.md, `bench_memory`; a /v1 request cost about
10% more CPU than a native one before it came this way too). They are matched by the app's own
`Route`s for them (`streaming_routes`), so paths, methods and path parameters are the router's.
Here the same handlers run with what the stack gave them, done inline:

    request id      the same `x-request-id` header, log line and log context
    errors          the app's own exception handlers, so the same JSON bodies and statuses;
                    a failure after the response started is logged and re-raised (the server
                    then closes the connection), as Starlette's error middleware does

CORS needs its middleware, so with `cors_origins` set the route goes through Starlette.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import cast

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Receive, Scope, Send

from tokenrelay.server import routes_compat
from tokenrelay.server.middleware import IdentifiedSend, begin_request
from tokenrelay.server.routes_native import attach_stream, chat_stream_get, chat_stream_post

ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]

# The endpoints whose responses live as long as a stream.
STREAMING: frozenset[Endpoint] = frozenset(
    {
        chat_stream_post,
        chat_stream_get,
        routes_compat.chat_completions,
        routes_compat.messages,
        attach_stream,
    }
)


def streaming_routes(routes: Sequence[BaseRoute]) -> list[Route]:
    """The app's routes for the streaming endpoints, in the app's order."""
    return [route for route in routes if isinstance(route, Route) and route.endpoint in STREAMING]


def endpoint_for(scope: Scope, routes: Sequence[Route]) -> Endpoint | None:
    """The endpoint to serve a request directly with, if one of `routes` matches it fully; its
    path parameters go into the scope, as the router would put them."""
    if scope["type"] != "http" or scope.get("root_path"):
        return None  # (mounted under a prefix: let the router match it)
    for route in routes:
        match, child_scope = route.matches(scope)
        if match is Match.FULL:
            scope.update(child_scope)
            return cast(Endpoint, route.endpoint)
    return None  # a wrong method too: the router answers 405


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
