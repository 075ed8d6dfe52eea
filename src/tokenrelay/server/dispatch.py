"""The app's outermost layer: a request id for every request, and a short way to the
streaming routes.

`Dispatcher` is pure ASGI, wrapped around Starlette's own middleware stack (`TokenRelayApp.
build_middleware_stack`). Every HTTP request gets its id here: the `x-request-id` header, the
request line in the log, the log context (`middleware.py`).

The streaming routes (`POST` and `GET /api/chat/stream`, `POST /v1/chat/completions` and
`/v1/messages`, `GET /api/streams/{id}`) live as long as a stream, and every frame and closure
on their way in stays in memory until the answer ends, on top of a share of each request's
CPU (docs/performance.md has the figures). So while
the app has no middleware but its own, they are matched here, with the app's own `Route`
objects (paths, methods and path parameters as the router has them), and served as the stack
would serve them: errors go to the app's exception handlers, looked up when they happen, so
`add_exception_handler` applies; a failure after the response started is logged and re-raised
(the server closes the connection), as Starlette's error middleware does.

As soon as the app has a middleware that it did not bring itself (`add_middleware`, or CORS
from the settings), every request takes the stack, so that middleware sees streaming
responses too. An app mounted under a prefix (`root_path`) takes the stack as well.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tokenrelay.server import routes_compat
from tokenrelay.server.middleware import IdentifiedSend, begin_request
from tokenrelay.server.routes_native import attach_stream, chat_stream_get, chat_stream_post

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
    if scope.get("root_path"):
        return None  # mounted under a prefix: let the router match it
    for route in routes:
        match, child_scope = route.matches(scope)
        if match is Match.FULL:
            scope.update(child_scope)
            return cast(Endpoint, route.endpoint)
    return None  # a wrong method too: the router answers 405


class Dispatcher:
    def __init__(self, app: Starlette, stack: ASGIApp) -> None:
        self.app = app
        self.stack = stack
        # Read when the stack is built, after which Starlette refuses new middleware.
        self.direct_routes = [] if app.user_middleware else streaming_routes(app.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.stack(scope, receive, send)
            return
        identified = IdentifiedSend(scope, send, begin_request(scope))
        endpoint = endpoint_for(scope, self.direct_routes) if self.direct_routes else None
        if endpoint is None:
            await self.stack(scope, receive, identified)
        else:
            await self._serve(scope, receive, identified, endpoint)

    async def _serve(
        self, scope: Scope, receive: Receive, send: IdentifiedSend, endpoint: Endpoint
    ) -> None:
        """Serve the request with `endpoint`, as the routes and middleware would."""
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except Exception as exc:
            response = await self._handle(request, exc)
        try:
            await response(scope, receive, send)
        except Exception as exc:
            if not send.started:
                await (await self._handle(request, exc))(scope, receive, send)
            raise

    async def _handle(self, request: Request, exc: Exception) -> Response:
        """The app's exception handler's answer for `exc` (its status code's, else the one
        for the nearest class in its MRO), as Starlette's exception layers choose it."""
        handlers: dict[Any, Callable[..., Any]] = self.app.exception_handlers
        handler = None
        if isinstance(exc, HTTPException):
            handler = handlers.get(exc.status_code)
        for cls in type(exc).__mro__ if handler is None else ():
            handler = handlers.get(cls)
            if handler is not None:
                break
        if handler is None:
            raise exc
        if inspect.iscoroutinefunction(handler):
            response = await handler(request, exc)
        else:
            response = await run_in_threadpool(handler, request, exc)
        return cast(Response, response)
