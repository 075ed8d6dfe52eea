"""One pooled HTTP client per upstream, and the one place transport failures are mapped.

`UpstreamClient.request(path, body)` POSTs JSON; the response's SSE events come out as they
arrive (incremental WHATWG decoding, so events split anywhere, even inside a UTF-8 character,
come out whole). `UpstreamClient.push(path, body, sink)` hands them to a sink instead, in a
loop callback each network read queues (http1 only; `UpstreamProvider.stream_into` uses it
when it can).
Two transports carry it:

    http1   (providers/http1.py) an asyncio.Protocol with httptools: the default, and the
            reason a relayed token costs what it does (benchmarks/RESULTS.md)
    httpx   for upstreams reached through an HTTP(S) proxy from the environment, which
            http1 does not speak; or when `transport = "httpx"` is configured

Failures become the GenerationError tree: HTTP statuses as `upstream_errors` maps them;
connect, pool and read timeouts UpstreamTimeout; refused, reset or malformed connections
NetworkError. Exception texts (which carry URLs) are never kept: only their class names.

Cancelling the consumer aborts the upstream connection (it is never drained): that is what
stops the upstream's generation.
"""

from __future__ import annotations

import urllib.request
from abc import abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol
from urllib.parse import urlsplit

import httpx
import orjson

from tokenrelay import timers
from tokenrelay.errors import GenerationError, NetworkError, UpstreamTimeout
from tokenrelay.metrics import METRICS
from tokenrelay.providers import http1
from tokenrelay.providers.base import Delta, GenerationRequest, Provider
from tokenrelay.providers.upstream_httpx import HttpxEvents
from tokenrelay.sse import ServerSentEvent

Transport = Literal["auto", "http1", "httpx"]
TRANSPORTS: tuple[Transport, ...] = ("auto", "http1", "httpx")

TIMEOUTS = (httpx.TimeoutException, http1.ConnectTimeout, http1.PoolTimeout)
TRANSPORT_FAILURES = (*TIMEOUTS, httpx.TransportError, http1.UpstreamConnectionError)


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    name: str
    base_url: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # carries the key
    connect_timeout: float = 10.0
    # Each open stream holds one upstream connection (HTTP/1.1), so this caps concurrent
    # streams per upstream: past it, a stream waits for a slot (up to the 30 s pool timeout).
    # At 1000, 2000 open streams saw a TTFT p99 of 30 s (benchmarks/RESULTS.md).
    max_connections: int = 10_000
    transport: Transport = "auto"


def proxied(url: str) -> bool:
    """Whether the environment sends requests for `url` through a proxy (as httpx reads it)."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.netloc)


class _Transport(Protocol):
    def batches(
        self, path: str, payload: bytes, on_status: Callable[[int], None]
    ) -> AsyncGenerator[list[ServerSentEvent], None]: ...

    async def aclose(self) -> None: ...


class UpstreamCall:
    """One request: whether its upstream answered, and its transport failures mapped."""

    __slots__ = ("answered", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.answered = False  # a failure after the status line is that request's

    def on_status(self, status: int) -> None:
        self.answered = True
        METRICS.upstream_request(self.name, status)

    def failure(self, exc: Exception) -> GenerationError:
        timed_out = isinstance(exc, TIMEOUTS)
        if not self.answered:
            METRICS.upstream_request(self.name, "timeout" if timed_out else "network_error")
        error = UpstreamTimeout if timed_out else NetworkError
        return error(f"{self.name}: {type(exc).__name__}")


class UpstreamClient:
    def __init__(self, config: UpstreamConfig) -> None:
        self.name = config.name
        use_httpx = config.transport == "httpx" or (
            config.transport == "auto" and proxied(config.base_url)
        )
        kind = HttpxEvents if use_httpx else http1.Http1Events
        self.transport: _Transport = kind(
            config.name,
            config.base_url,
            config.headers,
            connect_timeout=config.connect_timeout,
            max_connections=config.max_connections,
        )

    def request(
        self, path: str, body: dict[str, Any]
    ) -> tuple[AsyncGenerator[list[ServerSentEvent], None], UpstreamCall]:
        """Start a POST: its events in batches, and the call that maps its failures.

        Not a generator wrapping the transport's: the caller iterates the transport's own
        generator and hands what it raises to `call.failure`, one layer less per token.
        """
        call = UpstreamCall(self.name)
        return self.transport.batches(path, orjson.dumps(body), call.on_status), call

    @property
    def pushes(self) -> bool:
        """Whether `push` can be used: the http1 transport's reads call the sink themselves."""
        return isinstance(self.transport, http1.Http1Events)

    async def push(self, path: str, body: dict[str, Any], sink: http1.Sink) -> None:
        """POST, then hand each read's events to `sink` (True from it: the answer is
        complete) in a loop callback; transport failures mapped as `request`'s."""
        assert isinstance(self.transport, http1.Http1Events)
        call = UpstreamCall(self.name)
        try:
            await self.transport.push(path, orjson.dumps(body), call.on_status, sink, _read_tail)
        except TRANSPORT_FAILURES as exc:
            raise call.failure(exc) from None

    async def aclose(self) -> None:
        await self.transport.aclose()


# After the last event, the end of the body (the chunked terminator) is normally in the same
# read or the next packet. Reading it lets the connection be reused (no new TCP and TLS
# handshake for the next stream); an upstream that holds the body open past this is cut off.
_TAIL_GRACE = 0.1
_tail_timers = timers.Deadlines()  # one loop timer for every stream's tail read


async def _read_tail(batches: AsyncIterator[list[ServerSentEvent]]) -> None:
    """Read what follows the last event, ignoring it, until the body ends or the grace ends."""
    try:
        async with timers.Timeout(_tail_timers, _TAIL_GRACE):
            async for _ in batches:
                pass
    except (TimeoutError, *TRANSPORT_FAILURES):
        pass  # the answer is complete: the connection is simply not reused


class WireDecoder(Protocol):
    finished: bool

    def feed_sse(self, event: ServerSentEvent) -> list[Delta]: ...

    def finish(self) -> None: ...


class UpstreamProvider(Provider):
    """A provider behind an HTTP streaming API: a wire format over one pooled client.

    Subclasses name the `path`, the auth `headers`, the `request_body` and a `new_decoder`.
    Model names are passed through: the upstream decides what exists.
    """

    path: ClassVar[str]

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str | None,
        models: list[str],
        *,
        connect_timeout: float = 10.0,
        transport: Transport = "auto",
    ) -> None:
        self.name = name
        self._models = models
        config = UpstreamConfig(
            name,
            base_url,
            self.headers(api_key),
            connect_timeout=connect_timeout,
            transport=transport,
        )
        self._client = UpstreamClient(config)

    @staticmethod
    @abstractmethod
    def headers(api_key: str | None) -> dict[str, str]: ...

    @staticmethod
    @abstractmethod
    def request_body(request: GenerationRequest) -> dict[str, Any]: ...

    @staticmethod
    @abstractmethod
    def new_decoder() -> WireDecoder: ...

    def models(self) -> list[str]:
        return list(self._models)

    def supports(self, model: str) -> bool:
        return bool(model)

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        decoder = self.new_decoder()
        batches, call = self._client.request(self.path, self.request_body(request))
        try:
            async with aclosing(batches):
                async for batch in batches:
                    for event in batch:
                        for delta in decoder.feed_sse(event):
                            yield delta
                        if decoder.finished:
                            break
                    if decoder.finished:
                        await _read_tail(batches)
                        break
        except TRANSPORT_FAILURES as exc:
            raise call.failure(exc) from None
        decoder.finish()

    @property
    def pushes(self) -> bool:
        return self._client.pushes

    async def stream_into(
        self, request: GenerationRequest, on_delta: Callable[[Delta], None]
    ) -> None:
        """`stream`, with the deltas handed to `on_delta` from the upstream's network reads:
        no task wakes per token (benchmarks/RESULTS.md, "tokens pushed from the upstream's
        read")."""
        if not self._client.pushes:
            await super().stream_into(request, on_delta)
            return
        decoder = self.new_decoder()

        def sink(batch: list[ServerSentEvent]) -> bool:
            for event in batch:
                for delta in decoder.feed_sse(event):
                    on_delta(delta)
                if decoder.finished:
                    return True
            return False

        await self._client.push(self.path, self.request_body(request), sink)
        decoder.finish()

    async def aclose(self) -> None:
        await self._client.aclose()
