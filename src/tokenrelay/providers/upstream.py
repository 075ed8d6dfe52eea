"""One pooled HTTP client per upstream, and the one place transport failures are mapped.

`UpstreamClient.events(path, body)` POSTs JSON and yields the response's SSE events as they
arrive (incremental WHATWG decoding, so events split anywhere, even inside a UTF-8 character,
come out whole). Failures become the GenerationError tree:

    HTTP 429                          RateLimited (Retry-After / retry-after-ms honoured)
    HTTP 503, 529, *overloaded*       Overloaded
    HTTP 408, 504, httpx timeouts     UpstreamTimeout
    other 5xx                         UpstreamError (retryable)
    other 4xx                         UpstreamRejected (not retryable)
    connect/read/protocol errors      NetworkError

An error body is read up to 64 KiB only to pick out identifier-like labels (`type`, `code`)
for the log. Its message, the headers and httpx's exception text (which carries URLs) are
never kept: none of them reach a client or a log line.

Cancelling the consumer closes the response inside `httpx.AsyncClient.stream`: the
connection is dropped rather than drained, which is what stops the upstream's generation.
"""

from __future__ import annotations

import email.utils
import time
from abc import abstractmethod
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import httpx
import orjson

from tokenrelay.errors import (
    GenerationError,
    NetworkError,
    Overloaded,
    RateLimited,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
)
from tokenrelay.metrics import METRICS
from tokenrelay.providers.base import Delta, GenerationRequest, Provider
from tokenrelay.sse import ServerSentEvent, SSEDecoder
from tokenrelay.wire.common import safe_label

_ERROR_BODY_LIMIT = 64 * 1024


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


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait, from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _labels(body: bytes) -> tuple[str, str]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "?", "?"
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return "?", "?"
    return safe_label(error.get("type")), safe_label(error.get("code"))


def status_error(name: str, status: int, headers: httpx.Headers, body: bytes) -> GenerationError:
    kind, code = _labels(body)
    detail = f"{name}: HTTP {status} type={kind} code={code}"
    retry_after = parse_retry_after(headers)
    if status == 429:
        return RateLimited(detail, retry_after=retry_after)
    if status in (503, 529) or "overloaded" in kind:
        return Overloaded(detail, retry_after=retry_after)
    if status in (408, 504):
        return UpstreamTimeout(detail)
    if status >= 500:
        return UpstreamError(detail, retry_after=retry_after)
    return UpstreamRejected(detail)


class UpstreamClient:
    def __init__(self, config: UpstreamConfig) -> None:
        self.name = config.name
        self._client = httpx.AsyncClient(
            base_url=config.base_url,
            headers=config.headers,
            # Reads have no timeout here: the Stream owns first-token and idle deadlines.
            timeout=httpx.Timeout(connect=config.connect_timeout, read=None, write=30.0, pool=30.0),
            limits=httpx.Limits(
                max_connections=config.max_connections, max_keepalive_connections=100
            ),
        )

    async def events(
        self, path: str, body: dict[str, Any]
    ) -> AsyncGenerator[ServerSentEvent, None]:
        headers = {"content-type": "application/json", "accept": "text/event-stream"}
        answered = False  # a failure after the status line is that request's, not another one
        try:
            async with self._client.stream(
                "POST", path, content=orjson.dumps(body), headers=headers
            ) as response:
                METRICS.upstream_request(self.name, response.status_code)
                answered = True
                if response.status_code >= 400:
                    raise await self._status_error(response)
                decoder = SSEDecoder()
                async for chunk in response.aiter_bytes():
                    for event in decoder.feed(chunk):
                        yield event
        except httpx.TimeoutException as exc:
            if not answered:
                METRICS.upstream_request(self.name, "timeout")
            raise UpstreamTimeout(f"{self.name}: {type(exc).__name__}") from None
        except httpx.TransportError as exc:
            if not answered:
                METRICS.upstream_request(self.name, "network_error")
            raise NetworkError(f"{self.name}: {type(exc).__name__}") from None

    async def _status_error(self, response: httpx.Response) -> GenerationError:
        body = b""
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) >= _ERROR_BODY_LIMIT:
                break
        return status_error(self.name, response.status_code, response.headers, body)

    async def aclose(self) -> None:
        await self._client.aclose()


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
    ) -> None:
        self.name = name
        self._models = models
        config = UpstreamConfig(
            name, base_url, self.headers(api_key), connect_timeout=connect_timeout
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
        body = self.request_body(request)
        async with aclosing(self._client.events(self.path, body)) as events:
            async for event in events:
                for delta in decoder.feed_sse(event):
                    yield delta
                if decoder.finished:
                    break
        decoder.finish()

    async def aclose(self) -> None:
        await self._client.aclose()
