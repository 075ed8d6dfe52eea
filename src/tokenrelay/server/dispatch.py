"""The app's outermost layer: a request id for every request, and a short way to the
streaming routes.

`Dispatcher` is pure ASGI, wrapped around Starlette's own middleware stack (`TokenRelayApp.
build_middleware_stack`). Every HTTP request gets its id here: the `x-request-id` header, the
request line in the log, the log context (`middleware.py`).

Every request to `/api/` and `/v1/` is authenticated here too, before any route or middleware
(`auth.py`): one place, so no route can forget it.

The streaming routes (`POST` and `GET /api/chat/stream`, `POST /v1/chat/completions` and
`/v1/messages`, `GET /api/streams/{id}`) live as long as a stream, and every frame and closure
on their way in stays in memory until the answer ends, on top of a share of each request's
CPU (docs/performance.md has the figures). So while
the app has no middleware but its own, they are matched here, with the app's own `Route`
objects (paths, methods and path parameters as the router has them), and served as the stack
would serve them: an error goes to the app's exception handlers, chosen as Starlette's
exception layers choose them (`add_exception_handler` applies, a handler for 500 or Exception
included), and one that only the 500 handler answers is raised on for the server to log.

As soon as the app has a middleware that it did not bring itself (`add_middleware`, or CORS
from the settings), a body size limit or debug mode, every request takes the stack, so that
middleware sees streaming responses too. An app mounted under a prefix (`root_path`) takes
the stack as well.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokenrelay.server import routes_compat
from tokenrelay.server.auth import authenticate, cors_headers, guarded
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
        # Read when the stack is built, as Starlette's own layers read them then.
        stacked = app.user_middleware or app.debug or getattr(app, "max_body_size", None)
        self.direct_routes = [] if stacked else streaming_routes(app.routes)
        self.handlers: dict[Any, Callable[..., Any]] = {}  # as ExceptionMiddleware has them
        self.error_handler: Callable[..., Any] | None = None  # as ServerErrorMiddleware has it
        for key, handler in app.exception_handlers.items():
            if key in (500, Exception):
                self.error_handler = handler
            else:
                self.handlers[key] = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.stack(scope, receive, send)
            return
        identified = IdentifiedSend(scope, send, begin_request(scope))
        if guarded(scope):
            state = self.app.state.tokenrelay
            try:
                await authenticate(scope, state.keys, state.tokens, state.settings.auth.required)
            except Exception as exc:  # a 401 in the route's dialect, or the store's 503
                allowed = state.settings.server.cors_origins
                refusal = WithHeaders(identified, cors_headers(scope, allowed))
                await self._answer(Request(scope, receive), refusal, exc)  # type: ignore[arg-type]
                return
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
            await response(scope, receive, send)
        except Exception as exc:
            await self._answer(request, send, exc)

    async def _answer(self, request: Request, send: IdentifiedSend, exc: Exception) -> None:
        """Answer `exc` as Starlette's exception layers do: the handler for its status code
        (an HTTPException) or the nearest class in its MRO; else the app's handler for 500 or
        Exception (or a plain 500), after which it is raised on for the server to log."""
        handler = self.handlers.get(exc.status_code) if isinstance(exc, HTTPException) else None
        for cls in type(exc).__mro__ if handler is None else ():
            handler = self.handlers.get(cls)
            if handler is not None:
                break
        if handler is not None:
            if send.started:
                raise RuntimeError(
                    "Caught handled exception, but response already started."
                ) from exc
            await _respond(handler, request, exc, send)
            return
        if not send.started:
            if self.error_handler is None:
                await _respond(_plain_500, request, exc, send)
            else:
                await _respond(self.error_handler, request, exc, send)
        raise exc


class WithHeaders:
    """A `send` that adds headers to the response start (CORS headers on a refusal)."""

    def __init__(self, send: IdentifiedSend, headers: dict[str, str]) -> None:
        self._send = send
        self._headers = headers

    @property
    def started(self) -> bool:
        return self._send.started

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start" and self._headers:
            extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self._headers.items()]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await self._send(message)


def _plain_500(request: Request, exc: Exception) -> Response:
    return PlainTextResponse("Internal Server Error", status_code=500)


async def _respond(
    handler: Callable[..., Any], request: Request, exc: Exception, send: IdentifiedSend
) -> None:
    """Call an exception handler, sync or async, and send the response it returns."""
    if _is_async_callable(handler):
        response = await handler(request, exc)
    else:
        response = await run_in_threadpool(handler, request, exc)
    if response is not None:
        await response(request.scope, request.receive, send)


def _is_async_callable(obj: Any) -> bool:
    while isinstance(obj, functools.partial):
        obj = obj.func
    return inspect.iscoroutinefunction(obj) or (
        callable(obj) and inspect.iscoroutinefunction(obj.__call__)
    )
