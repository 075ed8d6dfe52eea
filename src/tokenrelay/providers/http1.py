"""A lean HTTP/1.1 client for upstream streams: each network read parsed once, in the callback.

Why not httpx here: relaying a token costs what the slowest layer on its path costs, and
httpx's stack (httpcore, anyio cancel scopes, h11) measured 2.8 ms of CPU per paced 20-token
stream and 72 µs per further token under uvloop, against 0.75 ms and 27 µs for this module
(benchmarks/bench_upstream.py; RESULTS.md, "Upstream transport"). A one-off run of aiohttp's
client sat in between. So this is an `asyncio.Protocol` with httptools (the parser uvicorn
uses) doing the HTTP work, de-chunking included, and the SSE decoder fed inside
`data_received`: a read becomes events with no task switch, no per-chunk future and no copy
beyond the parser's. A consumer can go further and `push`: each read then queues one loop
callback that hands its events to the consumer's sink (decoded, logged, written to the
client), so a token wakes no task at all.

What it does, and no more, since upstream addresses come only from configuration:
- POST with a JSON body; `http://` and `https://` (the default SSL context, with
  `SSL_CERT_FILE` honoured, else certifi's bundle, as httpx does);
- keep-alive reuse: idle connections are kept for `keepalive_expiry` seconds, and a request
  on a reused connection that the server had closed (the keep-alive race: no byte of a
  response yet) is sent once more on a new connection, as browsers and urllib3 do;
- a cap on open connections, waited for up to `pool_timeout`;
- back-pressure: a consumer that falls behind pauses reading, so the kernel's window, not
  our memory, holds the excess;
- closing mid-response aborts the connection (never drains it): that is what makes an
  upstream stop generating, and stop billing.
Proxies are not spoken here; `UpstreamClient` hands a proxied upstream to httpx.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

from tokenrelay import __version__
from tokenrelay.providers.upstream_errors import ERROR_BODY_LIMIT, status_error
from tokenrelay.sse import ServerSentEvent, SSEDecoder

# A consumer this many events behind stops the reads until it catches up.
_PAUSE_AT = 256

# The response headers anything reads: framing here, Retry-After in upstream_errors. The rest
# (a provider sends a dozen) would be held for as long as the stream is open.
_KEPT_HEADERS = frozenset({"content-length", "transfer-encoding", "retry-after", "retry-after-ms"})


# Takes a read's events; returns True to stop (the answer is complete).
Sink = Callable[[list[ServerSentEvent]], bool]


class UpstreamConnectionError(ConnectionError):
    """The connection failed or closed before the response was complete."""


class PoolTimeout(TimeoutError):
    """No connection slot became free within the pool timeout."""


class ConnectTimeout(TimeoutError):
    """The TCP (and TLS) connection was not made within the connect timeout."""


def _ssl_context() -> ssl.SSLContext:
    cafile = os.environ.get("SSL_CERT_FILE")
    if not cafile:
        import certifi  # httpx's dependency; the bundle users of the SDKs already trust

        cafile = certifi.where()
    return ssl.create_default_context(cafile=cafile)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where requests go: scheme, host, port, the base path and the Host header."""

    host: str
    port: int
    tls: bool
    base_path: str
    host_header: str

    @classmethod
    def from_url(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("an upstream base_url must be an http(s) URL with a host")
        tls = parts.scheme == "https"
        default_port = 443 if tls else 80
        port = parts.port or default_port
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == default_port else f"{shown}:{port}"
        return cls(host, port, tls, parts.path.rstrip("/"), host_header)


class Http1Connection(asyncio.Protocol):
    """One upstream connection, one request at a time; events are decoded as bytes arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()  # once: 3.11's lookup makes a getpid() call
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self.status = 0
        self.headers: dict[str, str] = {}
        self._parser: httptools.HttpResponseParser | None = None
        self._decoder: SSEDecoder | None = None
        self._events: list[ServerSentEvent] = []
        self._raw = bytearray()
        self._raw_limit = 0
        self._complete = False
        self._keep_alive = False
        self._error: UpstreamConnectionError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._ends_at_close = False
        self._sink: Sink | None = None
        self._sink_context = contextvars.Context()
        self._sink_error: Exception | None = None
        self._push_due = False  # a `_push` is queued on the loop

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have their methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._parser is None or self._complete:
            self.abort()  # bytes with no request in flight: out of step, never to be reused
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail("upgrade")
        except httptools.HttpParserError:
            self._fail("malformed HTTP response")
        else:
            if self._sink is None:
                self._wake()
            elif self._events:
                if not self._push_due:
                    # Queued, not run here: inside the read, every stream's token work ran in
                    # the loop's I/O phase, and the steps a cancel takes (ready-queue steps,
                    # each waiting a loop turn) waited behind it all. The cancel lag's p99
                    # under load went from 10 to 17 ms; queued, it is back, at the same CPU.
                    # The callback runs in the pushing task's context, as the sink must.
                    self._push_due = True
                    self._loop.call_soon(self._push, context=self._sink_context)
            elif self._complete:
                self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._parser is not None and not self._complete:
            if self._ends_at_close and self.status:
                self._finish(keep_alive=False)  # a body delimited by the close itself
            else:
                self._fail("connection closed")
        self._wake()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        if key in _KEPT_HEADERS:
            self.headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        self.status = self._parser.get_status_code()
        framed = "content-length" in self.headers or "chunked" in self.headers.get(
            "transfer-encoding", ""
        )
        self._ends_at_close = not framed
        if self.status < 400:
            self._decoder = SSEDecoder()

    def on_body(self, body: bytes) -> None:
        if self._decoder is not None:
            self._events += self._decoder.feed(body)
            if len(self._events) >= _PAUSE_AT and not self._paused and self.transport:
                self._paused = True
                self.transport.pause_reading()
        elif len(self._raw) < self._raw_limit:
            self._raw += body[: self._raw_limit - len(self._raw)]

    def on_message_complete(self) -> None:
        assert self._parser is not None
        self._finish(keep_alive=self._parser.should_keep_alive())

    def _push(self) -> None:
        """Hand the sink the events read so far (a loop callback queued by the read)."""
        self._push_due = False
        if self._sink is None or not self._events:
            return  # the push ended, or another call took them
        # Taking them resumes reading if a burst paused it before the pushing began.
        batch = self._take_events()
        try:
            stop = self._sink(batch)
        except Exception as exc:  # the consumer's own failure: raised in its task by push
            self._sink_error, self._sink = exc, None
            self.abort()
            self._wake()
            return
        if stop:
            self._sink = None
        if stop or self._complete:
            self._wake()

    def _finish(self, *, keep_alive: bool) -> None:
        self._complete = True
        self._keep_alive = keep_alive

    def _fail(self, why: str) -> None:
        if self._error is None and not self._complete:
            self._error = UpstreamConnectionError(why)
        self.abort()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    # the client side
    async def send(self, request: bytes, error_body_limit: int) -> None:
        """Write a request; returns once the status line and headers are in."""
        assert self.transport is not None
        self.status, self.headers, self._events = 0, {}, []
        self._raw, self._raw_limit = bytearray(), error_body_limit
        self._decoder, self._complete, self._keep_alive = None, False, False
        self._parser = httptools.HttpResponseParser(self)
        if self.closed:
            raise UpstreamConnectionError("connection closed")
        self.transport.write(request)
        while not self.status:
            self._raise_if_failed()
            if self.closed:
                raise UpstreamConnectionError("connection closed")
            await self._wait()

    async def next_events(self) -> list[ServerSentEvent]:
        """The events decoded since the last call, in the order they arrived, waiting for some
        if there are none; empty once the response is complete. Raises if the connection
        failed (after the events that came before the failure).

        For consumers that pull (`Http1Events.batches`, a pushed response's tail). A server's
        stream pushes (`push`), so this is no longer once per token there.
        """
        while not self._events:
            if self._complete:
                return []
            self._raise_if_failed()
            await self._wait()
        return self._take_events()

    def _take_events(self) -> list[ServerSentEvent]:
        batch, self._events = self._events, []
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return batch

    async def push(self, sink: Sink) -> bool:
        """Hand each read's events to `sink`, in a loop callback the read queues, until the
        sink returns True or the response is complete; returns whether the sink stopped it.

        No task wakes per read, which `next_events` costs (RESULTS.md, "tokens pushed from
        the upstream's read"). What the sink raises is raised here, after the connection is
        aborted; a connection failure is raised after the events that came before it.
        """
        self._sink = sink
        # The sink runs as part of the pushing task: with its context (the log's request and
        # stream ids), not the connection's, which is that of whichever task opened it.
        self._sink_context = contextvars.copy_context()
        try:
            if self._events:
                self._push()
            while self._sink is not None and not self._complete:
                if self._error is not None:
                    raise self._error
                await self._wait()
            if self._sink_error is not None:
                raise self._sink_error
            return self._sink is None
        finally:
            self._sink = None

    async def rest(self) -> AsyncGenerator[list[ServerSentEvent], None]:
        """The events still to come, in batches (after `push` has stopped)."""
        while batch := await self.next_events():
            yield batch

    async def read_error_body(self) -> bytes:
        """The body of an error response, cut at the limit `send` was given."""
        while not self._complete and len(self._raw) < self._raw_limit:
            self._raise_if_failed()
            await self._wait()
        return bytes(self._raw)

    @property
    def reusable(self) -> bool:
        return self._complete and self._keep_alive and not self.closed

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Http1Pool:
    """Connections to one origin: idle ones reused, a cap on how many are open."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 10.0,
        max_connections: int = 10_000,
        max_idle: int = 512,
        keepalive_expiry: float = 5.0,
        pool_timeout: float = 30.0,
    ) -> None:
        self.origin = Origin.from_url(url)
        self._ssl = _ssl_context() if self.origin.tls else None
        self._connect_timeout = connect_timeout
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[Http1Connection] = []
        self._max_idle = max_idle
        self._keepalive_expiry = keepalive_expiry
        self._pool_timeout = pool_timeout
        self.opened = 0  # connections made, for tests and the curious

    async def acquire(self) -> Http1Connection:
        """A connection slot, then an idle connection or a new one."""
        if self._slots.locked():
            try:
                async with asyncio.timeout(self._pool_timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise PoolTimeout("no free upstream connection") from None
        else:
            await self._slots.acquire()
        try:
            return self._idle_connection() or await self._connect()
        except BaseException:
            self._slots.release()
            raise

    def release(self, connection: Http1Connection) -> None:
        """Keep a connection whose response was read to its end; abort any other."""
        self._slots.release()
        if connection.reusable and len(self._idle) < self._max_idle:
            connection.idle_since = time.monotonic()
            connection.reused = True
            self._idle.append(connection)
        else:
            connection.abort()

    async def replace(self, dead: Http1Connection) -> Http1Connection:
        """A new connection in the slot of one that turned out to be dead.

        If this raises, the slot is still `dead`'s, and releasing it frees the slot."""
        dead.abort()
        return await self._connect()

    def _idle_connection(self) -> Http1Connection | None:
        oldest_allowed = time.monotonic() - self._keepalive_expiry
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and connection.idle_since >= oldest_allowed:
                return connection
            connection.abort()
        return None

    async def _connect(self) -> Http1Connection:
        loop = asyncio.get_running_loop()
        origin = self.origin
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, protocol = await loop.create_connection(
                    Http1Connection,
                    origin.host,
                    origin.port,
                    ssl=self._ssl,
                    server_hostname=origin.host if self._ssl else None,
                )
        except TimeoutError:
            raise ConnectTimeout("connect timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamConnectionError(f"connect failed: {type(exc).__name__}") from None
        self.opened += 1
        return protocol

    def request_head(self, path: str, headers: dict[str, str], body_length: int) -> bytes:
        lines = [
            f"POST {self.origin.base_path}{path} HTTP/1.1",
            f"Host: {self.origin.host_header}",
            f"User-Agent: tokenrelay/{__version__}",
            "Content-Type: application/json",
            f"Content-Length: {body_length}",
            "Accept: text/event-stream",
        ]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def close(self) -> None:
        for connection in self._idle:
            connection.abort()
        self._idle.clear()


class Http1Events:
    """POST JSON, yield SSE events in batches: the transport `UpstreamClient` uses by default."""

    def __init__(
        self,
        name: str,
        base_url: str,
        headers: dict[str, str],
        *,
        connect_timeout: float,
        max_connections: int,
    ) -> None:
        for header, value in headers.items():
            if any(c in header + value for c in "\r\n\0"):
                raise ValueError(f"{name}: header {header!r} holds a line break or NUL")
        self.name = name
        self.headers = headers
        self.pool = Http1Pool(
            base_url, connect_timeout=connect_timeout, max_connections=max_connections
        )

    async def batches(
        self, path: str, payload: bytes, on_status: Callable[[int], None]
    ) -> AsyncGenerator[list[ServerSentEvent], None]:
        connection = await self._open(path, payload, on_status)
        # The generator lives as long as the stream (minutes): nothing in its frame may keep
        # the request's bytes. orjson's `payload` holds a 4 KiB buffer, which was a tenth of
        # the memory of an open stream (benchmarks/RESULTS.md, memory profile).
        del payload
        try:
            # A loop rather than a generator on the connection: one generator layer less
            # per token.
            while batch := await connection.next_events():
                yield batch
        finally:
            self.pool.release(connection)  # aborts it unless the response was read to its end

    async def push(
        self,
        path: str,
        payload: bytes,
        on_status: Callable[[int], None],
        sink: Sink,
        tail: Callable[[AsyncIterator[list[ServerSentEvent]]], Awaitable[None]],
    ) -> None:
        """POST, then hand each read's events to `sink` in a loop callback (see
        `Http1Connection.push`). Once the sink has stopped, `tail` is given the rest of the
        body's events to read, so that the connection can be reused."""
        connection = await self._open(path, payload, on_status)
        del payload  # as in `batches`
        try:
            if await connection.push(sink):
                await tail(connection.rest())
        finally:
            self.pool.release(connection)

    async def _open(
        self, path: str, payload: bytes, on_status: Callable[[int], None]
    ) -> Http1Connection:
        """A connection with a 2xx or 3xx response's head read; the caller releases it."""
        request = self.pool.request_head(path, self.headers, len(payload)) + payload
        del payload
        connection = await self.pool.acquire()
        try:
            try:
                await connection.send(request, ERROR_BODY_LIMIT)
            except UpstreamConnectionError:
                if not connection.reused:
                    raise
                # The keep-alive race: the server closed this idle connection before our
                # request reached it, so it saw nothing. Once more on a new connection.
                connection = await self.pool.replace(connection)
                await connection.send(request, ERROR_BODY_LIMIT)
            del request
            on_status(connection.status)
            if connection.status >= 400:
                body = await connection.read_error_body()
                raise status_error(self.name, connection.status, connection.headers, body)
        except BaseException:
            self.pool.release(connection)
            raise
        return connection

    async def aclose(self) -> None:
        self.pool.close()
