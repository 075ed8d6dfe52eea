"""Responses: the JSON error body, and the native event stream as a raw ASGI response.

`EventStreamResponse` sends a stream's events from a cursor. Two tasks run side by side: the
pump (read a batch, encode it, send it as one write) and the listener (wait for
`http.disconnect`). Whichever ends first cancels the other, so a client that leaves is noticed
at once, whatever the producer is doing, with no per-token polling. A write that does not drain
within `send_timeout` drops this subscriber (the producer never waits for it; it can resume).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tokenrelay.errors import client_message, http_status
from tokenrelay.events import Event
from tokenrelay.sse import PING, encode_json_event
from tokenrelay.streams.manager import StreamManager
from tokenrelay.streams.subscriber import batches

logger = logging.getLogger("tokenrelay.http")

T = TypeVar("T")

SSE_HEADERS = {
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
    "connection": "keep-alive",
}


def error_response(
    error_type: str,
    request_id: str,
    *,
    message: str | None = None,
    status: int | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    """`{"error": {"type", "message", "request_id", ...}}`; `message` must be our own words."""
    body = {"type": error_type, "message": message or client_message(error_type)}
    body.update(extra)
    body["request_id"] = request_id
    return Response(
        orjson.dumps({"error": body}),
        status_code=status or http_status(error_type),
        media_type="application/json",
        headers=headers,
    )


def encode_native(stream_id: str, events: list[Event]) -> bytes:
    return b"".join(encode_json_event(f"{stream_id}:{e.seq}", e.data) for e in events)


async def wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def until_disconnect(receive: Receive, work: Coroutine[Any, Any, T]) -> T | None:
    """Run `work` until it finishes (its result) or the client disconnects (None)."""
    worker = asyncio.ensure_future(work)
    listener = asyncio.ensure_future(wait_for_disconnect(receive))
    try:
        await asyncio.wait({worker, listener}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (worker, listener):
            task.cancel()
        await asyncio.gather(worker, listener, return_exceptions=True)
    if worker.done() and not worker.cancelled() and worker.exception() is None:
        return worker.result()
    if listener.done() and not listener.cancelled():
        return None
    exc = worker.exception()
    assert exc is not None
    raise exc


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(
        self,
        manager: StreamManager,
        stream_id: str,
        *,
        after: int = 0,
        encode: Callable[[str, list[Event]], bytes] = encode_native,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            content=None,
            media_type=self.media_type,
            headers={**SSE_HEADERS, "x-stream-id": stream_id, **(headers or {})},
        )
        # Starlette writes `content-length: 0` for an empty body; a stream has no length.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.manager = manager
        self.stream_id = stream_id
        self.after = after
        self.encode = encode

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        async with self.manager.subscription(self.stream_id):
            finished = await until_disconnect(receive, self._pump(send))
        if finished is None:
            logger.info("client left stream %s", self.stream_id)

    async def _pump(self, send: Send) -> bool:
        settings = self.manager.settings
        log = self.manager.log
        async for events in batches(log, self.stream_id, self.after, keepalive=settings.keepalive):
            body = self.encode(self.stream_id, events) if events else PING
            try:
                async with asyncio.timeout(settings.send_timeout):
                    await send({"type": "http.response.body", "body": body, "more_body": True})
            except TimeoutError:
                logger.info("stream %s: client did not drain in time; dropped", self.stream_id)
                return False
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return True
