"""A lean HTTP/1.1 client connection for the load tester: bytes in, timestamps out.

A load generator must cost far less than what it measures, and it must see each network read
as it happens (to time tokens and to notice an intermediary that delivers them in bursts). So
this is an `asyncio.Protocol` with httptools parsing the response (de-chunking included), and
a body callback invoked once per read with the read's `perf_counter` time. No per-chunk
objects, no copies beyond the parser's.

Connections are kept alive and reused through `Pool`, as browsers and SDKs do; one that was
aborted or closed by the server is simply not returned to it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

import httptools

BodyCallback = Callable[[bytes, float], None]


class Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.status = 0
        self.headers: dict[str, str] = {}
        self._parser: httptools.HttpResponseParser | None = None
        self._on_body: BodyCallback | None = None
        self._read_at = 0.0
        self._headers: asyncio.Future[None] | None = None
        self._complete: asyncio.Future[bool] | None = None
        self._header_name = ""
        self.reusable = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport is not an asyncio.Transport subclass, but has its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._parser is None:
            return
        self._read_at = time.perf_counter()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad HTTP response: {type(exc).__name__}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self._fail(ConnectionResetError("connection closed"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        self.status = self._parser.get_status_code()
        if self._headers is not None and not self._headers.done():
            self._headers.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self._on_body is not None:
            self._on_body(body, self._read_at)

    def on_message_complete(self) -> None:
        assert self._parser is not None
        self.reusable = self._parser.should_keep_alive()
        if self._complete is not None and not self._complete.done():
            self._complete.set_result(True)

    def _fail(self, exc: Exception) -> None:
        for future in (self._headers, self._complete):
            if future is not None and not future.done():
                future.set_exception(exc)

    # the client side
    async def send(self, head: bytes, body: bytes, on_body: BodyCallback) -> None:
        """Write a request; returns once the response headers are in (`status`, `headers`)."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self.status, self.headers, self.reusable = 0, {}, False
        self._parser = httptools.HttpResponseParser(self)
        self._on_body = on_body
        self._headers = loop.create_future()
        self._complete = loop.create_future()
        self.transport.write(head + body)
        try:
            await self._headers
        except ConnectionError:
            self._complete.exception()  # failed alike, and nobody will await it now
            raise

    async def finished(self) -> None:
        """Wait for the end of the response body (raises if the connection is lost first)."""
        assert self._complete is not None
        await self._complete

    def abort(self) -> None:
        """Close now, as a client that gives up does: the server sees the connection go."""
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()


class Pool:
    """Idle keep-alive connections to one host, opened on demand."""

    def __init__(self, url: str, connect_timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError("the load tester speaks plain http:// (put TLS in front of it)")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.base_path = parts.path.rstrip("/")
        self.netloc = parts.netloc
        self._idle: list[Connection] = []
        self._connect_timeout = connect_timeout

    async def acquire(self) -> Connection:
        while self._idle:
            connection = self._idle.pop()
            if connection.transport is not None and not connection.transport.is_closing():
                return connection
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout):
            _, protocol = await loop.create_connection(Connection, self.host, self.port)
        return protocol

    def release(self, connection: Connection) -> None:
        if connection.reusable:
            self._idle.append(connection)
        else:
            connection.abort()

    def close(self) -> None:
        for connection in self._idle:
            connection.abort()
        self._idle.clear()

    def request_head(
        self, method: str, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> bytes:
        lines = [f"{method} {self.base_path}{path} HTTP/1.1", f"Host: {self.netloc}"]
        if body:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        # As browsers do: an intermediary that compresses streams is one that buffers them.
        lines += ["Accept: text/event-stream", "Accept-Encoding: gzip"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
