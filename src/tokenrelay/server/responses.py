"""The event stream response: a stream's events from a cursor, written to one client.

`EventStreamResponse` commits the HTTP status once there is news, then hands the rest to a
`Subscription` (streams/subscription.py), which writes through the writer `writer_for` picks
for this `send`. A listener waits for `http.disconnect` meanwhile (`until_disconnect`):
whichever ends first stops the other, so a client that leaves is noticed at once, whatever
the producer is doing, with no polling. A client whose socket does not drain within
`send_timeout` is dropped (the producer never waits for it; it can resume): its connection is
aborted, so the socket and what was queued for it go at once (`AsgiWriter.abort`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tokenrelay import logs
from tokenrelay.errors import StoreUnavailable, UnknownStream, client_message
from tokenrelay.events import Event, error_event
from tokenrelay.server import uvicorn_writer
from tokenrelay.server.asgi_writer import AsgiWriter
from tokenrelay.server.dialects import NATIVE, Dialect, retry_after_header
from tokenrelay.server.middleware import IdentifiedSend
from tokenrelay.streams.manager import StreamManager
from tokenrelay.streams.subscription import Subscription
from tokenrelay.wire.common import EventEncoder
from tokenrelay.wire.native import NativeEncoder

logger = logging.getLogger("tokenrelay.http")

T = TypeVar("T")

SSE_HEADERS = {
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
    "connection": "keep-alive",
}
_SSE_HEAD = tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in SSE_HEADERS.items())
_SSE_CONTENT_TYPE = (b"content-type", b"text/event-stream; charset=utf-8")


def sse_head(stream_id: str, headers: dict[str, str] | None = None) -> list[tuple[bytes, bytes]]:
    """An event stream's response headers: the shared ones (encoded once), its id, `headers`,
    the type; no `content-length`, which Starlette would add for an empty body."""
    head = [*_SSE_HEAD, (b"x-stream-id", stream_id.encode("ascii"))]
    if headers:
        head += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    head.append(_SSE_CONTENT_TYPE)
    return head


def writer_for(send: Send) -> AsgiWriter:
    """The writer for a response whose start went out through `send`, chosen once.

    The app's request-id wrapper (`IdentifiedSend`) acts on the response start only, so
    bodies may go to the `send` it wraps; a user's middleware is never looked through."""
    body_send = send.passes_bodies_to if isinstance(send, IdentifiedSend) else send
    cycle = uvicorn_writer.cycle_of(body_send)
    if cycle is not None:
        return uvicorn_writer.UvicornWriter(body_send, cycle)
    return AsgiWriter(body_send)


# Events that are part of the answer: once one exists, the status line is 200 and a failure
# is an in-band error (the answer so far stays the client's).
_ANSWER = frozenset({"token", "reasoning", "tool_call", "json", "logprobs"})


class _Disconnected(Exception):
    """The client is gone (raised in the listener, to end the task group)."""


async def _listen(receive: Receive) -> None:
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    except Exception as exc:  # a receive that fails: the client is gone all the same
        raise _Disconnected from exc
    raise _Disconnected


async def until_disconnect(receive: Receive, work: Awaitable[T]) -> T | None:
    """`work`'s result, or None if the client disconnects first (`work` is then cancelled).

    `work` runs in the calling task; only the listener gets a task of its own. What `work`
    raises is raised as itself, not inside the task group's ExceptionGroup, and a cancel of
    the calling task from outside stays a cancel."""
    finished: list[T] = []
    try:
        async with asyncio.TaskGroup() as group:
            listener = group.create_task(_listen(receive))
            try:
                finished.append(await work)
            finally:
                listener.cancel()
    except BaseExceptionGroup as raised:
        _, failures = raised.split(_Disconnected)
        if failures is not None:
            failure = failures.exceptions[0]  # one body: at most one failure of its own
            raise failure from failure.__cause__
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError from None  # someone else's cancel came meanwhile
    return finished[0] if finished else None


class EventStreamResponse(Response):
    """Streams events from a cursor, committing the HTTP status only once there is news.

    The status line waits for the first token or terminal event, or `commit_deadline` seconds
    (then it goes out, and pings keep the connection warm). A stream that fails before any
    token therefore answers with a real status: 429 with Retry-After, 502, 504, and a JSON
    error body in the caller's dialect.
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
        dialect: Dialect = NATIVE,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(content=None, media_type=self.media_type)
        self.raw_headers = sse_head(stream_id, headers)
        self.manager = manager
        self.stream_id = stream_id
        self.after = after
        self.encoder = encoder or NativeEncoder(stream_id)
        self.dialect = dialect
        self.request_id = request_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        logs.stream_id.set(self.stream_id)
        async with self.manager.subscription(self.stream_id):
            finished = await until_disconnect(receive, self._respond(send))
        if finished is None:
            logger.info("client left stream %s", self.stream_id)

    async def _respond(self, send: Send) -> bool:
        early = await self._until_news()
        ending = early[-1].payload() if early and early[-1].terminal else None
        if ending and ending["type"] == "error" and not any(e.type in _ANSWER for e in early):
            await self._send_error_status(send, ending)
            return True
        start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
        await send(start)
        settings = self.manager.settings
        writer = writer_for(send)
        subscription = Subscription(
            self.manager.log,
            self.stream_id,
            self.after,
            self.encoder,
            writer,
            keepalive=settings.keepalive,
            send_timeout=settings.send_timeout,
        )
        try:
            if not await subscription.run():
                writer.abort()
                return False
        except (StoreUnavailable, UnknownStream):  # the store went away (or lost the stream)
            if not await self._end_unstored(writer, subscription.cursor):
                writer.abort()
                return False
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return True

    async def _end_unstored(self, writer: AsgiWriter, cursor: int) -> bool:
        """A terminal `error` the log never held (it could not be reached), so it repeats the
        last event's id: a resume from there reads on, once the store is back. False if the
        client did not take it within `send_timeout`."""
        retry = StoreUnavailable.retry_after
        message = client_message(StoreUnavailable.error_type)
        event = error_event(cursor, StoreUnavailable.error_type, message, True, retry)
        writer.write_now(self.encoder.encode_one(event))
        try:
            async with asyncio.timeout(self.manager.settings.send_timeout):
                await writer.drain()
        except TimeoutError:
            return False
        return True

    async def _until_news(self) -> list[Event]:
        """Events up to the first piece of the answer (text, reasoning, a call) or the ending,
        or whatever came within the commit deadline.

        A retry before the first token moves the deadline to `commit_deadline` after the
        retry is due: a persistent 429 ends as a 429 with Retry-After, however long the
        retries' waits (the status events that say so are written when the status is).
        They decide the status; the subscription then writes them from the log."""
        loop = asyncio.get_running_loop()
        commit_deadline = self.manager.settings.commit_deadline
        deadline = loop.time() + commit_deadline
        events: list[Event] = []
        cursor = self.after
        while (remaining := deadline - loop.time()) > 0:
            batch = await self.manager.log.read(self.stream_id, cursor, wait=remaining)
            if not batch:
                break
            events += batch
            cursor = batch[-1].seq
            if any(e.type in _ANSWER or e.terminal for e in batch):
                break
            for event in batch:
                if event.type == "status" and "retry_in" in (note := event.payload()):
                    deadline = max(deadline, loop.time() + note["retry_in"] + commit_deadline)
        return events

    async def _send_error_status(self, send: Send, error: dict[str, Any]) -> None:
        error_type = error["error_type"]
        extra = {k: error[k] for k in ("retryable", "retry_after") if k in error}
        body = self.dialect.error_body(error_type, self.request_id, error["message"], **extra)
        headers = {"x-stream-id": self.stream_id, **retry_after_header(error.get("retry_after"))}
        raw = [(b"content-type", b"application/json")]
        raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        start = {"type": "http.response.start", "status": self.dialect.status(error_type)}
        await send({**start, "headers": raw})
        await send({"type": "http.response.body", "body": body, "more_body": False})
