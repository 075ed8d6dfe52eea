"""The HTTP connection: what a slow or hostile client can hold, and for how long.

uvicorn's httptools protocol reads a request head and body for as long as a client cares to
send them, keeps any number of connections, and buffers headers of any size and number (a
probe on 2026-12-01 held 1,050 trickling connections until the server ran out of descriptors,
and grew by 354 MB on 8 headers of 32 MB). `ConnectionGuard` is that protocol with limits:

    head_timeout         the request line and headers must arrive within this (408)
    body_timeout         a request body may pause at most this long between pieces (408)
    keep_alive_timeout   an idle keep-alive connection is closed after this (uvicorn's own)
    max_connections      one more is answered 503 at once and closed; never more than the
                         open-file limit holds (raised to its hard limit at start-up)
    max_head_bytes       a request line and headers larger than this: 431
    max_headers          more header fields than this: 431

Each answer is JSON in the native error shape with `connection: close`, written before the
app sees the request (so no route's dialect applies). A request the parser cannot read at all
(a NUL or CR in a header, a bad request line) gets the same JSON 400 in place of uvicorn's
plain text. The per-token path is untouched: the guard works per read, never per write.

It subclasses uvicorn's `HttpToolsProtocol` and calls it for everything else; uvicorn is pinned
(pyproject.toml) to the releases tests/server/test_connection.py has run against.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import resource
from dataclasses import dataclass, replace
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from tokenrelay.settings import ServerSection, load_settings

logger = logging.getLogger("tokenrelay.http")
_RESERVED_DESCRIPTORS = 64

_MESSAGES = {
    400: ("invalid_http", "The request is not valid HTTP."),
    408: ("request_timeout", "The request did not arrive in time."),
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

    @classmethod
    def of(cls, server: ServerSection) -> ConnectionLimits:
        return cls(
            head_timeout=server.head_timeout,
            body_timeout=server.body_timeout,
            max_connections=server.max_connections,
            max_head_bytes=server.max_head_bytes,
            max_headers=server.max_headers,
        )


@functools.cache
def configured_limits() -> ConnectionLimits:
    """The limits from the settings every worker reads ($TOKENRELAY_CONFIG, the environment),
    once per process: uvicorn builds the protocol itself, with no way to pass them in."""
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
        self._head_bytes = 0  # read while the current request's head is incomplete
        self._parsed_head = 0  # its request target and headers, as parsed
        self._header_count = 0
        self._in_head = True  # between a request's first byte (or the connection) and its head
        self._timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ the connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            logger.warning("connection refused: %d open", len(self.connections) - 1)
            self._refuse(503, b"retry-after: 1\r\n")
            return
        self._arm(self.limits.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        elif self._timer is not None:  # reading a body: it is alive
            self._arm(self.limits.body_timeout)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.limits.max_head_bytes:
            self._refuse(431)  # a head still incomplete past the limit: stop buffering it

    def send_400_response(self, msg: str) -> None:
        """The parser could not read the request: our JSON, not uvicorn's plain text."""
        self._refuse(400)

    # ------------------------------------------------------------ the parser's callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._parsed_head = self._header_count = 0
        if self._timer is None:  # a keep-alive connection's next request has begun
            self._arm(self.limits.head_timeout)

    def on_url(self, url: bytes) -> None:
        self._parsed_head += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._parsed_head += len(name) + len(value) + 4  # ": " and CRLF
        if self._header_count <= self.limits.max_headers:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        too_many = self._header_count > self.limits.max_headers
        if too_many or self._parsed_head > self.limits.max_head_bytes:
            self._refuse(431)
            raise httptools.HttpParserError("head too large")  # stop parsing; the app never runs
        super().on_headers_complete()
        self._arm(self.limits.body_timeout)  # until the body is in (no body: at once, below)

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_head, self._head_bytes = True, 0  # what comes next is the next request's head
        super().on_message_complete()

    # ------------------------------------------------------------ timers and refusals

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        """No head, or a body that stopped. The app, if it waits for the body, sees the
        connection go (uvicorn's `connection_lost`), as for any client that leaves."""
        self._timer = None
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            self.transport.close()  # a response is under way: no room for another
        else:
            self._refuse(408)

    def _refuse(self, status: int, extra_headers: bytes = b"") -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(error_response(status, extra_headers))
            self.transport.close()
