"""Providers behind an HTTP streaming API, over one pooled aiohttp client per upstream.

`UpstreamProvider.stream` POSTs the request body and turns the response into deltas:

    aiohttp read ─► SSEDecoder.feed (incremental WHATWG) ─► the dialect's decoder ─► Delta

aiohttp brings the pooling, TLS (`SSL_CERT_FILE`, else certifi's bundle, as the official SDKs
trust), proxies and the connect timeout. The proxy comes from the environment (`HTTPS_PROXY`,
`NO_PROXY`, ...) as aiohttp's `trust_env` reads it, but once per upstream rather than per
request: `trust_env` reads the environment and `~/.netrc` in worker threads on every request
(two thread hand-offs each), and a key must never come from a netrc file anyway. Reads have no
timeout of their own: the stream's producer holds the first-token and idle deadlines. A session
belongs to the event loop that made it, so each loop gets its own.

Failures become the GenerationError tree, here and nowhere else: an HTTP status as
`upstream_errors` maps it; a connect timeout UpstreamTimeout; anything else on the wire
(refused, reset, a body cut short) NetworkError. Exception texts, which carry URLs, are never
kept: only their class names.

Closing the generator early (a cancel, a failure) closes the upstream connection rather than
draining it: that is what stops the upstream generating, and billing. After a complete answer
the rest of the body (the chunked terminator) is read briefly, so the connection is reused.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from abc import abstractmethod
from collections.abc import AsyncGenerator
from typing import Any, ClassVar, Protocol

import aiohttp
import certifi
import orjson
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from tokenrelay import __version__
from tokenrelay.errors import GenerationError, NetworkError, UpstreamTimeout
from tokenrelay.metrics import METRICS
from tokenrelay.providers.base import Delta, GenerationRequest, Provider
from tokenrelay.providers.upstream_errors import ERROR_BODY_LIMIT, status_error
from tokenrelay.settings import UpstreamSection
from tokenrelay.sse import ServerSentEvent, SSEDecoder

# Each open stream holds one upstream connection (HTTP/1.1), so this caps concurrent streams
# per upstream; past it a stream waits for a slot, bounded by its first-token deadline.
MAX_CONNECTIONS = 10_000
# After the last event, the body's end is normally in the same read or the next packet.
TAIL_GRACE = 0.1
# How long an idle connection is kept for reuse: under uvicorn's default of 5 s, the server of
# vLLM and of most Python upstreams, which closes it then. A POST sent on a connection the
# server has just closed fails, and aiohttp retries only idempotent requests.
KEEPALIVE = 4.0
_REQUEST_HEADERS = {"content-type": "application/json", "accept": "text/event-stream"}


def _ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE") or certifi.where())


def _env_proxy(url: URL) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy the environment names for `url`, as aiohttp's `trust_env` would take it."""
    try:
        return get_env_proxy_for_url(url)
    except LookupError:
        return None, None


def _checked(name: str, headers: dict[str, str]) -> dict[str, str]:
    for header, value in headers.items():
        if any(c in header + value for c in "\r\n\0"):
            raise ValueError(f"{name}: header {header!r} holds a line break or NUL")
    return headers


class UpstreamClient:
    """POSTs JSON to one upstream; the connection pool is per event loop."""

    def __init__(self, name: str, base_url: str, headers: dict[str, str], connect_timeout: float):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"{name}: base_url must be an http(s) URL")
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._proxy, self._proxy_auth = _env_proxy(URL(self.base_url))
        self._headers = {"user-agent": f"tokenrelay/{__version__}", **_checked(name, headers)}
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout)
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=MAX_CONNECTIONS, keepalive_timeout=KEEPALIVE, ssl=_ssl_context()
            )
            session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                timeout=self._timeout,
                skip_auto_headers=("accept-encoding",),  # a compressed stream arrives in lumps
            )
            self._sessions[loop] = session
        return session

    async def open(self, url: URL, body: dict[str, Any]) -> aiohttp.ClientResponse:
        """A 2xx response whose body is still to be read (the caller closes it); raises the
        mapped GenerationError for an error status or a failed connection."""
        try:
            response = await self._session().post(
                url,
                data=orjson.dumps(body),
                headers=_REQUEST_HEADERS,
                allow_redirects=False,
                proxy=self._proxy,
                proxy_auth=self._proxy_auth,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            timed_out = isinstance(exc, TimeoutError)
            METRICS.upstream_request(self.name, "timeout" if timed_out else "network_error")
            raise self.failure(exc) from None
        METRICS.upstream_request(self.name, response.status)
        if response.status >= 300:
            try:
                body_head = await _error_body(response)
            except (aiohttp.ClientError, OSError):
                body_head = b""
            finally:
                response.close()
            raise status_error(self.name, response.status, response.headers, body_head)
        return response

    def failure(self, exc: BaseException) -> GenerationError:
        error = UpstreamTimeout if isinstance(exc, TimeoutError) else NetworkError
        return error(f"{self.name}: {type(exc).__name__}")

    async def aclose(self) -> None:
        """Close the running loop's connections (each loop closes what it opened)."""
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()


async def _error_body(response: aiohttp.ClientResponse) -> bytes:
    body = b""
    while len(body) < ERROR_BODY_LIMIT and (chunk := await response.content.readany()):
        body += chunk
    return body[:ERROR_BODY_LIMIT]


async def _finish_body(response: aiohttp.ClientResponse) -> None:
    """Read what follows the last event, briefly, so the connection can be reused."""
    content = response.content
    try:
        if not content.is_eof():
            async with asyncio.timeout(TAIL_GRACE):
                while await content.readany():
                    pass
    except (TimeoutError, aiohttp.ClientError, OSError):
        response.close()  # the answer is complete: the connection is simply not reused
    except BaseException:
        response.close()  # cancelled meanwhile: never leave the connection to the collector
        raise
    else:
        response.release()


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

    def __init__(self, name: str, section: UpstreamSection, api_key: str | None) -> None:
        self.name = name
        self._models = list(section.models)
        headers = self.headers(api_key)
        self._client = UpstreamClient(name, section.base_url, headers, section.connect_timeout)
        self._url = URL(self._client.base_url + self.path)

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
        response = await self._client.open(self._url, self.request_body(request))
        decoder, events = self.new_decoder(), SSEDecoder()
        complete = False
        try:
            # `readany` rather than `iter_any`: one iterator layer less per read.
            while chunk := await response.content.readany():
                for event in events.feed(chunk):
                    for delta in decoder.feed_sse(event):
                        yield delta
                    if decoder.finished:
                        complete = True
                        return
            decoder.finish()  # the body ended: raises unless the answer was complete
        except (aiohttp.ClientError, OSError) as exc:
            raise self._client.failure(exc) from None
        finally:
            if complete:
                await _finish_body(response)
            else:
                response.close()

    async def aclose(self) -> None:
        await self._client.aclose()
