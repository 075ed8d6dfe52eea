"""`create_app`: the ASGI application, assembled from settings.

Errors are mapped here, at the boundary, by the app's exception handlers: each renders its
error in the route's dialect (`dialects.py`). Messages come from our own table or our own
validation text, never from `str(exception)` of something we did not write; unexpected
exceptions become a 500 whose details exist only in the log, under the request id the client
is given. The handlers are the app's own, so a user's `add_exception_handler` replaces them
on every route, the streaming ones included (`dispatch.py`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, StatelessLifespan

from tokenrelay import logs, metrics_workers
from tokenrelay.auth.keys import key_store
from tokenrelay.auth.limits import limiter_for
from tokenrelay.auth.tokens import StreamTokens
from tokenrelay.auth.usage import usage_book_for
from tokenrelay.errors import (
    InvalidRequest,
    KeyOverLimit,
    RequestError,
    ServiceUnavailable,
    UnknownModel,
)
from tokenrelay.metrics import METRICS
from tokenrelay.providers.base import Provider
from tokenrelay.providers.configured import build_providers
from tokenrelay.providers.registry import ProviderRegistry
from tokenrelay.server import (
    routes_compat,
    routes_metrics,
    routes_native,
    routes_ui,
    uvicorn_writer,
)
from tokenrelay.server.auth import EXPOSED_HEADERS
from tokenrelay.server.dialects import dialect_of, limit_headers
from tokenrelay.server.dispatch import Dispatcher
from tokenrelay.server.lifecycle import (
    chain_shutdown_signals,
    exit_with_the_supervisor,
    supervisor_pid,
)
from tokenrelay.server.state import AppState, request_id_of
from tokenrelay.settings import Settings, load_settings
from tokenrelay.streams.log import StreamLog
from tokenrelay.streams.log_memory import MemoryStreamLog
from tokenrelay.streams.log_redis import RedisStreamLog
from tokenrelay.streams.manager import StreamManager

logger = logging.getLogger("tokenrelay.http")


def build_log(settings: Settings) -> StreamLog:
    s = settings.streams
    if not settings.redis.url:
        return MemoryStreamLog(
            max_bytes=s.max_log_bytes, ttl=s.ttl, max_ended_bytes=s.max_ended_bytes
        )
    max_age = s.total_timeout + s.resume_window + s.ttl
    return RedisStreamLog(
        settings.redis.url,
        max_bytes=s.max_log_bytes,
        ttl=s.ttl,
        max_age=max_age,
        lease=settings.redis.lease,
        grace=settings.redis.grace,
        cluster=settings.redis.cluster,
    )


async def _request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    extra: dict[str, Any] = {}
    if isinstance(exc, InvalidRequest):
        extra["fields"] = [{"field": p.field, "problem": p.problem} for p in exc.problems]
    if isinstance(exc, UnknownModel):
        extra["known_models"] = exc.known
    dialect = dialect_of(request.scope)
    headers = limit_headers(dialect, exc) if isinstance(exc, KeyOverLimit) else None
    return dialect.error_response(
        exc.error_type, request_id_of(request), message=exc.detail, headers=headers, **extra
    )


async def _unavailable(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceUnavailable)
    return dialect_of(request.scope).error_response(
        exc.error_type, request_id_of(request), headers={"retry-after": str(exc.retry_after)}
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    dialect = dialect_of(request.scope)
    error_type = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    if error_type is None:
        return dialect.error_response(
            "internal_error", request_id_of(request), status=exc.status_code
        )
    return dialect.error_response(error_type, request_id_of(request), headers=exc.headers)


async def _client_gone(request: Request, exc: Exception) -> Response:
    """The client left while its request was read: nobody is there to answer or to blame."""
    return Response(status_code=499)


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.error("request %s failed", request_id_of(request), exc_info=exc)
    return dialect_of(request.scope).error_response("internal_error", request_id_of(request))


# Exception class -> handler; an exception goes to the handler of the nearest class in its MRO.
EXCEPTION_HANDLERS: dict[Any, Any] = {
    RequestError: _request_error,
    ServiceUnavailable: _unavailable,
    HTTPException: _http_error,
    ClientDisconnect: _client_gone,
    Exception: _unexpected,
}


class TokenRelayApp(Starlette):
    """Starlette, with `dispatch.Dispatcher` as its outermost layer: request ids for every
    request, and the streaming routes served without the stack while the app has no
    middleware of the user's."""

    def build_middleware_stack(self) -> ASGIApp:
        return Dispatcher(self, super().build_middleware_stack())


def create_app(
    settings: Settings | None = None,
    *,
    providers: list[Provider] | None = None,
    handle_signals: bool = False,
) -> TokenRelayApp:
    """The app; with no `settings`, those of `$TOKENRELAY_CONFIG` and the environment."""
    settings = settings or load_settings()
    registry = ProviderRegistry(providers or build_providers(settings), settings.aliases)
    log = build_log(settings)
    # One Redis client per replica: the log's pool serves keys, limits, usage and tokens too.
    # Their calls come from request handlers before any response, which nothing cancels, so
    # they need not go through the log's shielded calls (log_redis.py explains why it does).
    client = log.redis if isinstance(log, RedisStreamLog) else None
    limiter = limiter_for(client, settings.redis.lease)
    keys = key_store(settings.auth.keys_file, client)
    take_over = registry.resolve if settings.redis.on_producer_lost == "continue" else None
    manager = StreamManager(
        log, settings.streams, limiter, usage_book_for(client), keys, take_over_with=take_over
    )
    state = AppState(settings, registry, manager, keys, StreamTokens(client))
    app = TokenRelayApp(
        routes=(
            routes_native.ROUTES + routes_compat.ROUTES + routes_metrics.ROUTES + routes_ui.ROUTES
        ),
        middleware=_middleware(settings),
        lifespan=_lifespan(state, handle_signals),
        exception_handlers=dict(EXCEPTION_HANDLERS),
    )
    app.state.tokenrelay = state
    return app


def _middleware(settings: Settings) -> list[Middleware]:
    if not settings.server.cors_origins:
        return []
    cors = Middleware(
        CORSMiddleware,
        allow_origins=list(settings.server.cors_origins),
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=["content-type", "last-event-id", "authorization", "x-api-key"],
        expose_headers=list(EXPOSED_HEADERS),
    )
    return [cors]


def _lifespan(state: AppState, handle_signals: bool) -> StatelessLifespan[Starlette]:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        restore = (
            chain_shutdown_signals(state.manager.drain, state.manager.hurry)
            if handle_signals
            else None
        )
        if not uvicorn_writer.available():
            logger.warning("uvicorn's connection state has changed: tokens go through ASGI send")
        state.manager.start_background()
        supervisor = supervisor_pid()
        orphaned = (
            asyncio.create_task(exit_with_the_supervisor(supervisor), name="supervisor")
            if supervisor is not None
            else None
        )
        shared = metrics_workers.directory()
        snapshots = (
            asyncio.create_task(metrics_workers.keep_writing(METRICS, shared), name="metrics")
            if shared is not None
            else None
        )
        try:
            yield
        finally:
            for task in (snapshots, orphaned):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            if restore is not None:
                restore()
            await state.manager.close()
            await state.manager.log.close()
            await state.registry.aclose()
            await state.keys.aclose()

    return lifespan


def serve_app() -> Starlette:
    """The factory `tokenrelay serve` hands to uvicorn (settings from $TOKENRELAY_CONFIG)."""
    app = create_app(load_settings(), handle_signals=True)
    logs.skip_unused_record_fields()
    tune_gc()
    return app


# Allocations of tracked objects between young-generation collections (CPython's default: 700).
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Set the garbage collector for a server holding thousands of open streams.

    What exists now (modules, settings, routes) lives as long as the process: frozen, the
    collector stops walking it at every older-generation collection (gc docs, gc.freeze).
    An open stream is a hundred or more tracked objects (its connections, tasks, coroutines,
    parsers). With CPython's default of a young collection every 700 allocations, objects that
    live as long as a request survive into the older generations, and full collections walk
    them all; with 10,000, most die by reference count before any collection sees them
    (`benchmarks/bench_gc.py` measures both). Nearly all of our garbage is freed by reference
    counting; the collector is for the rare cycles.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
