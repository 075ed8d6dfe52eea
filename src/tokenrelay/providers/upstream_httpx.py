"""The upstream path through httpx, for upstreams reached through an HTTP(S) proxy.

httpx speaks proxies (`HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, read from the environment) and
the lean `http1` transport does not, so a proxied upstream takes this path: correct, at a
higher CPU cost per request and per token (benchmarks/RESULTS.md, "Upstream transport").
Cancelling the consumer closes the response inside `httpx.AsyncClient.stream`: the
connection is dropped rather than drained, which is what stops the upstream's generation.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable

import httpx

from tokenrelay.errors import GenerationError
from tokenrelay.providers.upstream_errors import ERROR_BODY_LIMIT, status_error
from tokenrelay.sse import ServerSentEvent, SSEDecoder


class HttpxEvents:
    """POST JSON, yield SSE events; transport failures surface as httpx's exceptions."""

    def __init__(
        self,
        name: str,
        base_url: str,
        headers: dict[str, str],
        *,
        connect_timeout: float,
        max_connections: int,
    ) -> None:
        self.name = name
        self.client = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            # Reads have no timeout here: the Stream owns first-token and idle deadlines.
            timeout=httpx.Timeout(connect=connect_timeout, read=None, write=30.0, pool=30.0),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=100),
        )

    async def batches(
        self, path: str, payload: bytes, on_status: Callable[[int], None]
    ) -> AsyncGenerator[list[ServerSentEvent], None]:
        headers = {"content-type": "application/json", "accept": "text/event-stream"}
        async with self.client.stream("POST", path, content=payload, headers=headers) as response:
            on_status(response.status_code)
            if response.status_code >= 400:
                raise await self._status_error(response)
            decoder = SSEDecoder()
            async for chunk in response.aiter_bytes():
                yield decoder.feed(chunk)

    async def _status_error(self, response: httpx.Response) -> GenerationError:
        body = b""
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) >= ERROR_BODY_LIMIT:
                break
        return status_error(self.name, response.status_code, response.headers, body)

    async def aclose(self) -> None:
        await self.client.aclose()
