"""The HTTP connection: what a slow or hostile client can hold, and for how long.

uvicorn's httptools protocol reads a request head and body for as long as a client cares to
send them, keeps any number of connections, and buffers headers of any size and number (a
probe on 2026-12-01 held 1,050 trickling connections until the server ran out of descriptors,
and grew by 354 MB on 8 headers of 32 MB). `ConnectionGuard` is that protocol with limits:

    head_timeout         the request line and headers must arrive within this (408); any
                         byte starts the clock, a blank line between requests included
    body_timeout         a request body may pause at most this long between pieces, and,
                         past it, must average MIN_BODY_RATE: no trickling for ever (408)
    (body size)          a body, framing and trailers included, past the largest body limit
                         of any route (and an eighth more): 413; trailers are dropped
    keep_alive_timeout   an idle keep-alive connection is closed after this (uvicorn's own)
    max_connections      one more is answered 503 at once and closed; never more than the
                         open-file limit holds (raised to its hard limit at start-up)
    max_head_bytes       a request line and headers larger than this: 431
    max_headers          more header fields than this: 431

Each answer is JSON in the native error shape with `connection: close`, written before the
app sees the request (so no route's dialect applies); on a connection that is still writing
an earlier answer (pipelining), it is cut instead, as nothing may go in the middle of that.
Refusals are counted into one log line every 10 s, not one per connection. A request the
parser cannot read at all (a NUL or CR in a header, a bad request line) gets the same JSON
400 in place of uvicorn's plain text. The per-token path is untouched: the guard works per
read, never per write.

It subclasses uvicorn's `HttpToolsProtocol` and calls it for everything else; uvicorn is pinned
(pyproject.toml) to the releases tests/server/test_connection.py has run against.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import resource
import time
from dataclasses import dataclass, replace
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from tokenrelay.settings import ServerSection, load_settings

logger = logging.getLogger("tokenrelay.http")
_RESERVED_DESCRIPTORS = 64
MIN_BODY_RATE = 1024  # bytes a second, on average, that a body must keep up past body_timeout
REFUSAL_LOG_EVERY = 10.0  # seconds

_MESSAGES = {
    400: ("invalid_http", "The request is not valid HTTP."),
    408: ("request_timeout", "The request did not arrive in time."),
    413: ("payload_too_large", "The request body is larger than this server accepts."),
    431: ("headers_too_large", "The request's headers are too large or too many."),
    503: ("too_many_connections", "The server has too many open connections; retry shortly."),
}


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    head_timeout: float
    body_timeout: float
    max_connections: int
    max_head_bytes: int
    max_headers: int
    max_request_bytes: int  # a body and its chunk framing and trailers, on any route

    @classmethod
    def of(cls, server: ServerSection) -> ConnectionLimits:
        largest_body = max(server.max_body_bytes, server.max_body_bytes_v1)
        return cls(
            head_timeout=server.head_timeout,
            body_timeout=server.body_timeout,
            max_connections=server.max_connections,
            max_head_bytes=server.max_head_bytes,
            max_headers=server.max_headers,
            max_request_bytes=largest_body + largest_body // 8 + server.max_head_bytes,
        )


@functools.cache
def configured_limits() -> ConnectionLimits:
    """The limits from the settings every worker reads ($TOKENRELAY_CONFIG, the environment),
    once per process: uvicorn builds the protocol itself, with no way to pass them in."""
    logging.getLogger("uvicorn.error").addFilter(_WithoutParserWarnings())
    limits = ConnectionLimits.of(load_settings().server)
    return replace(limits, max_connections=min(limits.max_connections, connections_fit()))


def raise_descriptor_limit() -> int:
    """Raise the soft limit on open files to the hard one (as nginx's worker_rlimit_nofile
    would be set); the soft limit now. Workers inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # a hard limit of "unlimited" some systems refuse
            logger.warning("could not raise the open-file limit from %d", soft)
    return soft


def connections_fit() -> int:
    """How many client connections the descriptor limit holds: each stream also holds an
    upstream connection, and the process needs some for Redis, logs and the listener."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    return max(1, (soft - _RESERVED_DESCRIPTORS) // 2)


def error_response(status: int, extra_headers: bytes = b"") -> bytes:
    """A whole HTTP/1.1 response that closes the connection: status, JSON body."""
    error_type, message = _MESSAGES[status]
    body = orjson.dumps({"error": {"type": error_type, "message": message}})
    return b"".join(
        (
            STATUS_LINE[status],
            b"content-type: application/json\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\nconnection: close\r\n",
            extra_headers,
            b"\r\n",
            body,
        )
    )


class ConnectionGuard(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the limits above."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = configured_limits()
        self._in_head = True  # no request under way, or one whose head is not whole yet
        self._head_bytes = 0  # read while the current head is incomplete
        self._parsed_head = 0  # its request target and headers, as parsed
        self._header_count = 0
        self._body_started: float | None = None  # when the current body began, while it lasts
        self._body_bytes = 0
        self._refused = False  # answered (or cut) by the guard: nothing more is parsed
        self._timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ the connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, b"retry-after: 1\r\n")
            return
        self._arm(self.limits.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
            if self._timer is None:  # any byte starts the clock: a blank line included
                self._arm(self.limits.head_timeout)
        elif self._body_started is not None:
            self._body_bytes += len(data)
            if self._body_bytes > self.limits.max_request_bytes:
                self._refuse(413)  # a body, or trailers, past anything a route takes
                return
            if not self._body_keeps_pace():
                self._refuse(408)
                return
            self._arm(self.limits.body_timeout)  # it is alive
        super().data_received(data)
        if self._in_head and self._head_bytes > self.limits.max_head_bytes:
            self._refuse(431)  # a head still incomplete past the limit: stop buffering it

    def send_400_response(self, msg: str) -> None:
        """The parser could not read the request: our JSON, not uvicorn's plain text."""
        self._refuse(400)

    # ------------------------------------------------------------ the parser's callbacks

    def on_message_begin(self) -> None:
        if self._refused:
            return
        super().on_message_begin()
        self._in_head = True
        self._parsed_head = self._header_count = 0
        if self._timer is None:  # a keep-alive connection's next request has begun
            self._arm(self.limits.head_timeout)

    def on_url(self, url: bytes) -> None:
        if not self._refused:
            self._parsed_head += len(url)
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._refused or not self._in_head:
            return  # trailers: nothing here reads them, so they are dropped, not kept
        self._header_count += 1
        self._parsed_head += len(name) + len(value) + 4  # ": " and CRLF
        if self._header_count <= self.limits.max_headers:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_head = False
        self._disarm()
        too_many = self._header_count > self.limits.max_headers
        if too_many or self._parsed_head > self.limits.max_head_bytes:
            self._refuse(431)  # the app never runs; the rest of this read is ignored
            return
        super().on_headers_complete()
        self._body_started, self._body_bytes = self.loop.time(), 0
        self._arm(self.limits.body_timeout)  # until the body is in (no body: at once, below)

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._disarm()
        self._in_head, self._head_bytes = True, 0  # what comes next is the next request's head
        self._body_started = None
        super().on_message_complete()

    # ------------------------------------------------------------ timers and refusals

    def _body_keeps_pace(self) -> bool:
        """A body may pause up to `body_timeout` at a time, but not trickle for ever: past
        `body_timeout`, it must have averaged MIN_BODY_RATE."""
        assert self._body_started is not None
        elapsed = self.loop.time() - self._body_started
        return elapsed <= self.limits.body_timeout or self._body_bytes >= MIN_BODY_RATE * elapsed

    def _answer_owed(self) -> bool:
        """Whether an earlier request on this connection still waits for its answer."""
        cycle = self.cycle
        return bool(self.pipeline) or (cycle is not None and not cycle.response_complete)

    def _writing(self) -> bool:
        """Whether a response is being written here: nothing else may go in between."""
        cycle = self.cycle
        started = cycle is not None and cycle.response_started and not cycle.response_complete
        return bool(self.pipeline) or started

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        """No whole head, or a body that stopped. The app, if it waits for the body, sees
        the connection go (uvicorn's `connection_lost`), as for any client that leaves."""
        self._timer = None
        if self._in_head and self._answer_owed():
            # The client waits for an answer (minutes, for a non-streaming one) and has sent a
            # little of its next request, or a blank line: that may wait for the answer.
            self._arm(self.limits.head_timeout)
            return
        self._refuse(408)

    def _refuse(self, status: int, extra_headers: bytes = b"") -> None:
        """Answer `status` and close; or, with a response under way, close without a word
        (a second answer cannot go into the middle of it). Counted, not logged one by one."""
        if self._refused:
            return
        self._refused = True
        self._disarm()
        REFUSALS.note(status)
        if self.transport.is_closing():
            return
        if self._writing():
            self.transport.abort()
            return
        self.transport.write(error_response(status, extra_headers))
        self.transport.close()


class _RefusalLog:
    """Refusals are what an attack looks like: one line per REFUSAL_LOG_EVERY seconds with
    the counts by status, never one line per connection."""

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self._since = time.monotonic()

    def note(self, status: int) -> None:
        self._counts[status] = self._counts.get(status, 0) + 1
        now = time.monotonic()
        if now - self._since >= REFUSAL_LOG_EVERY:
            counts = ", ".join(f"{n} x {code}" for code, n in sorted(self._counts.items()))
            logger.warning("connections refused in the last %.0fs: %s", now - self._since, counts)
            self._counts.clear()
            self._since = now


REFUSALS = _RefusalLog()


class _WithoutParserWarnings(logging.Filter):
    """uvicorn logs every unreadable request, before the guard answers it; the guard counts
    them instead (REFUSALS)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Invalid HTTP request received."
