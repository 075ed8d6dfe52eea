"""Responses: the JSON error body, and the native event stream as a raw ASGI response.

`EventStreamResponse` sends a stream's events from a cursor. The request's task pumps (read a
batch, encode it, send it as one write) while a listener task waits for `http.disconnect`.
Whichever ends first stops the other, so a client that leaves is noticed at once, whatever the
producer is doing, with no per-token polling. A write that does not drain
within `send_timeout` drops this subscriber (the producer never waits for it; it can resume).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from typing import Any, TypeVar

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tokenrelay import logs
from tokenrelay.errors import client_message, http_status
from tokenrelay.events import Event
from tokenrelay.server.live import LiveWriter
from tokenrelay.sse import PING
from tokenrelay.streams.manager import StreamManager
from tokenrelay.timers import Deadlines
from tokenrelay.wire.common import EventEncoder
from tokenrelay.wire.native import NativeEncoder

logger = logging.getLogger("tokenrelay.http")

T = TypeVar("T")

# Every open stream arms a `send_timeout` around each write; one loop timer serves them all.
_write_deadlines = Deadlines()

MAX_WRITE = 64 * 1024  # bytes per write to a client; see EventStreamResponse._writes

SSE_HEADERS = {
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
    "connection": "keep-alive",
}
_SSE_HEAD = tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in SSE_HEADERS.items())
_SSE_CONTENT_TYPE = (b"content-type", b"text/event-stream; charset=utf-8")


def sse_head(stream_id: str, headers: dict[str, str] | None = None) -> list[tuple[bytes, bytes]]:
    """An event stream's response headers: the shared ones, its id, `headers`, the type.

    Set in place of Starlette's, which would also write `content-length: 0` for the empty body
    (a stream has no length). The shared headers are encoded once: each response's own copies
    were about 600 B of every open stream's memory.
    """
    head = [*_SSE_HEAD, (b"x-stream-id", stream_id.encode("ascii"))]
    if headers:
        head += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    head.append(_SSE_CONTENT_TYPE)
    return head


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


# Where the app's outermost layer leaves the server's own `send` (see `body_send`).
SERVER_SEND = "tokenrelay.server_send"


def body_send(scope: Scope, send: Send) -> Send:
    """The `send` to write a response's body through, once its start has gone out.

    Every middleware on our stack (Starlette's error and exception layers, the request id,
    CORS) acts on `http.response.start` only and passes body messages through unchanged. So
    body chunks skip them and go straight to the server's `send`, which `TokenRelayApp` keeps
    in the scope: three coroutine layers less per token, about 5% of a relayed token's CPU
    (benchmarks/RESULTS.md). A middleware that rewrites bodies (gzip) would need this
    removed; `tests/server/test_body_send.py` fails if one is added.
    """
    server_send: Send = scope.get(SERVER_SEND, send)
    return server_send


async def wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def until_disconnect(receive: Receive, work: Coroutine[Any, Any, T]) -> T | None:
    """Run `work` until it finishes (its result) or the client disconnects (None).

    `work` runs in the calling task; only the listener gets a task of its own, and a
    disconnect cancels the caller. (Two tasks and an `asyncio.wait` cost a task, a set and
    their callbacks per response, in memory for as long as a stream is open.)
    """
    caller = asyncio.current_task()
    assert caller is not None
    gone = False

    def on_listener_done(listener: asyncio.Future[None]) -> None:
        nonlocal gone
        if not listener.cancelled():  # a disconnect, or a receive that failed: gone either way
            gone = True
            caller.cancel()

    listener = asyncio.ensure_future(wait_for_disconnect(receive))
    listener.add_done_callback(on_listener_done)
    try:
        result = await work
    except asyncio.CancelledError:
        if gone and caller.uncancel() == 0:
            return None
        raise
    finally:
        listener.remove_done_callback(on_listener_done)
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)  # a cancel of ours still lands
    if gone:  # `work` finished all the same: the cancel meant for it is void
        caller.uncancel()
    return result


def native_error_body(error: dict[str, Any], request_id: str) -> bytes:
    body: dict[str, Any] = {
        "type": error["error_type"],
        "message": error["message"],
        "retryable": error["retryable"],
    }
    if "retry_after" in error:
        body["retry_after"] = error["retry_after"]
    body["request_id"] = request_id
    return orjson.dumps({"error": body})


class EventStreamResponse(Response):
    """Streams events from a cursor, committing the HTTP status only once there is news.

    The status line waits for the first token or terminal event, or `commit_deadline` seconds
    (then it goes out, and pings keep the connection warm). A stream that fails before any
    token therefore answers with a real status: 429 with Retry-After, 502, 504, and a JSON
    error body, rendered by `error_body` in the caller's dialect.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        manager: StreamManager,
        stream_id: str,
        *,
        request_id: str = "",
        after: int = 0,
        encoder: EventEncoder | None = None,
        error_body: Callable[[dict[str, Any], str], bytes] = native_error_body,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(content=None, media_type=self.media_type)
        self.raw_headers = sse_head(stream_id, headers)
        self.manager = manager
        self.stream_id = stream_id
        self.after = after
        self.encoder = encoder or NativeEncoder(stream_id)
        self.error_body = error_body
        self.request_id = request_id
        self._writer: asyncio.Task[Any] | None = None  # the task that writes to the client
        self._stalled = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        logs.stream_id.set(self.stream_id)
        async with self.manager.subscription(self.stream_id):
            finished = await until_disconnect(receive, self._respond(send, body_send(scope, send)))
        if finished is None:
            logger.info("client left stream %s", self.stream_id)

    async def _respond(self, send: Send, send_body: Send) -> bool:
        """Commit the status through `send`, then write the body through `send_body`."""
        self._writer = asyncio.current_task()
        early = await self._until_news()
        ending = early[-1].payload() if early and early[-1].terminal else None
        if ending and ending["type"] == "error" and not any(e.type == "token" for e in early):
            await self._send_error_status(send, ending)
            return True
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        send = send_body
        if early and not await self._send_events(send, early):
            return False
        if ending is not None:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return True
        return await self._pump(send, early[-1].seq if early else self.after)

    async def _until_news(self) -> list[Event]:
        """Events up to the first token or ending, or whatever came within the commit deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.manager.settings.commit_deadline
        events: list[Event] = []
        cursor = self.after
        while (remaining := deadline - loop.time()) > 0:
            batch = await self.manager.log.read(self.stream_id, cursor, wait=remaining)
            if not batch:
                break
            events += batch
            cursor = batch[-1].seq
            if any(e.type == "token" or e.terminal for e in batch):
                break
        return events

    async def _send_error_status(self, send: Send, error: dict[str, Any]) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"x-stream-id", self.stream_id.encode()),
        ]
        if error.get("retry_after") is not None:
            headers.append((b"retry-after", str(max(1, round(error["retry_after"]))).encode()))
        body = self.error_body(error, self.request_id)
        await send(
            {
                "type": "http.response.start",
                "status": http_status(error["error_type"]),
                "headers": headers,
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})

    def _writes(self, events: list[Event]) -> Iterator[bytes]:
        """Coalesce a batch into writes of at most MAX_WRITE bytes (whole events).

        The server's transport buffers whatever it is given, so one write of a whole backlog
        would sit in memory for a client that stopped reading; capped writes each wait for the
        socket to drain, and a stalled client holds at most one.
        """
        if len(events) == 1:
            yield self.encoder.encode_one(events[0])
            return
        start, size = 0, 0
        for index, event in enumerate(events):
            size += len(event.data) + 64  # the id and framing, roughly
            if size >= MAX_WRITE:
                yield self.encoder.encode(events[start : index + 1])
                start, size = index + 1, 0
        if start < len(events):
            yield self.encoder.encode(events[start:])

    async def _pump(self, send: Send, after: int) -> bool:
        """Send every event after `after`, then the end of the body; False if dropped.

        While caught up, the producer writes live tokens itself (`live.py`); this task wakes
        only to catch up, finish a write that had to wait, ping, or end.
        """
        log = self.manager.log
        keepalive = self.manager.settings.keepalive
        live = LiveWriter(send, self.encoder)
        cursor = after
        try:
            while True:
                live.start(cursor)
                if log.attach(self.stream_id, cursor, live):
                    try:
                        await live.sleep(keepalive)
                    finally:
                        log.detach(self.stream_id, live)
                    cursor = live.cursor
                    pending = live.take_pending()
                    if pending is not None and not await self._within_send_timeout(pending):
                        return False
                    if live.error is not None:
                        raise live.error
                    if live.idle and not await self._send_events(send, []):
                        return False
                    continue
                events = await log.read(self.stream_id, cursor, wait=keepalive)
                if events:
                    if not await self._send_events(send, events):
                        return False
                    cursor = events[-1].seq
                    if events[-1].terminal:
                        break
                    continue
                status = await log.status(self.stream_id)
                if status.ended and cursor >= status.last_seq:
                    break  # we already had the ending: nothing more will ever come
                if not await self._send_events(send, []):  # a keep-alive ping
                    return False
        finally:
            pending = live.take_pending()
            if pending is not None:
                pending.close()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return True

    async def _send_events(self, send: Send, events: list[Event]) -> bool:
        """Send a batch (a ping if empty) in capped writes; False if the client stopped draining."""
        for body in self._writes(events) if events else [PING]:
            message = {"type": "http.response.body", "body": body, "more_body": True}
            if not await self._within_send_timeout(send(message)):
                return False
        return True

    async def _within_send_timeout(self, write: Awaitable[None]) -> bool:
        """Await a write; False if it did not drain within `send_timeout` (then it is dropped)."""
        _write_deadlines.arm(self, self.manager.settings.send_timeout, self._drop_stalled)
        try:
            await write
        except asyncio.CancelledError:
            if self._stalled and self._writer is not None and self._writer.uncancel() == 0:
                logger.info("stream %s: client did not drain in time; dropped", self.stream_id)
                return False
            raise
        finally:
            _write_deadlines.disarm(self)
        return True

    def _drop_stalled(self) -> None:
        """`send_timeout` passed during a write: interrupt it (see _send_events)."""
        self._stalled = True
        if self._writer is not None:
            self._writer.cancel()
