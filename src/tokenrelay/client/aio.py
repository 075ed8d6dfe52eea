"""`AsyncClient`: the asyncio Python client (httpx). See `protocol.py` for what it decides."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx

from tokenrelay.client.events import StreamEvent
from tokenrelay.client.folding import StreamedAnswer
from tokenrelay.client.protocol import (
    Answer,
    Backoff,
    HttpRequest,
    Resumption,
    answer_of,
    chat_payload,
)
from tokenrelay.client.sync import DEFAULT_TIMEOUT
from tokenrelay.sse import SSEDecoder


class AsyncChatStream:
    """`async for event in stream`; `await cancel()` stops the generation on the server."""

    def __init__(self, http: httpx.AsyncClient, payload: dict[str, Any], backoff: Backoff) -> None:
        self._http = http
        self._progress = Resumption(payload, backoff)

    @property
    def stream_id(self) -> str:
        return self._progress.stream_id

    @property
    def resumes(self) -> int:
        return self._progress.resumes

    @property
    def answer(self) -> StreamedAnswer:
        """The answer so far (text, reasoning, tool calls), kept up to date as you iterate."""
        return self._progress.answer

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        progress = self._progress
        request = progress.first_request()
        try:
            while True:
                cause: BaseException | None = None
                try:
                    async for event in self._events(request):
                        yield event
                    if progress.ended:
                        return
                except httpx.TransportError as exc:
                    cause = exc
                await asyncio.sleep(progress.dropped(cause))
                request = progress.resume_request()
        finally:
            await self.cancel()  # left early: the generation must not go on without a reader

    async def _events(self, request: HttpRequest) -> AsyncIterator[StreamEvent]:
        async with self._http.stream(
            request.method, request.path, json=request.json, headers=request.headers
        ) as response:
            status = response.status_code
            body = await response.aread() if status not in (200, 204) else None
            if not self._progress.accept(status, response.headers, body):
                return
            decoder = SSEDecoder()
            async for chunk in response.aiter_bytes():
                for sse in decoder.feed(chunk):
                    event = self._progress.take(sse)
                    yield event
                    if event.terminal:
                        return

    async def cancel(self) -> bool:
        """Cancel on the server; False if there was nothing to cancel (not started, ended)."""
        request = self._progress.cancel_request()
        if request is None:
            return False
        self._progress.ended = True
        response = await self._http.request(request.method, request.path)
        return response.status_code == 202


class AsyncClient:
    """`async with AsyncClient(url) as client: async for event in client.stream("Hi"): ...`"""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        backoff: Backoff | None = None,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        # A key, when the server needs one: $TOKENRELAY_API_KEY unless given.
        key = api_key if api_key is not None else os.environ.get("TOKENRELAY_API_KEY", "")
        headers = {"authorization": f"Bearer {key}"} if key else None
        self._http = httpx.AsyncClient(
            base_url=base_url, timeout=timeout, transport=transport, headers=headers
        )
        self._backoff = backoff or Backoff()

    def stream(
        self,
        message: str | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        **fields: Any,
    ) -> AsyncChatStream:
        """A stream of typed events; `fields` are the request's other fields (model, ...)."""
        return AsyncChatStream(self._http, chat_payload(message, messages, fields), self._backoff)

    async def complete(
        self,
        message: str | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        **fields: Any,
    ) -> Answer:
        """The whole answer at once (`POST /api/chat`); raises StreamFailed on an error."""
        response = await self._http.post("/api/chat", json=chat_payload(message, messages, fields))
        return answer_of(response.status_code, response.content)

    async def models(self) -> dict[str, Any]:
        """`{"default": "sim/default", "models": [{"id": ...}, ...]}`"""
        response = await self._http.get("/api/models")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
