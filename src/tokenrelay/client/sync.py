"""`Client`: the blocking Python client (httpx). See `protocol.py` for what it decides."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
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
from tokenrelay.sse import SSEDecoder

DEFAULT_TIMEOUT = httpx.Timeout(10.0, read=60.0)  # read: longer than the server's 15 s pings


class ChatStream:
    """Iterate it for events. `cancel()` stops the generation on the server."""

    def __init__(self, http: httpx.Client, payload: dict[str, Any], backoff: Backoff) -> None:
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

    def __iter__(self) -> Iterator[StreamEvent]:
        progress = self._progress
        request = progress.first_request()
        try:
            while True:
                cause: BaseException | None = None
                try:
                    yield from self._events(request)
                    if progress.ended:
                        return
                except httpx.TransportError as exc:
                    cause = exc
                time.sleep(progress.dropped(cause))
                request = progress.resume_request()
        finally:
            self.cancel()  # left early: the generation must not go on without a reader

    def _events(self, request: HttpRequest) -> Iterator[StreamEvent]:
        with self._http.stream(
            request.method, request.path, json=request.json, headers=request.headers
        ) as response:
            body = response.read() if response.status_code not in (200, 204) else None
            if not self._progress.accept(response.status_code, response.headers, body):
                return
            decoder = SSEDecoder()
            for chunk in response.iter_bytes():
                for sse in decoder.feed(chunk):
                    event = self._progress.take(sse)
                    yield event
                    if event.terminal:
                        return

    def cancel(self) -> bool:
        """Cancel on the server; False if there was nothing to cancel (not started, ended)."""
        request = self._progress.cancel_request()
        if request is None:
            return False
        self._progress.ended = True
        response = self._http.request(request.method, request.path)
        return response.status_code == 202


class Client:
    """`with Client("http://127.0.0.1:8000") as client: for event in client.stream("Hi"): ...`"""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        backoff: Backoff | None = None,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        # A key, when the server needs one: $TOKENRELAY_API_KEY unless given.
        key = api_key if api_key is not None else os.environ.get("TOKENRELAY_API_KEY", "")
        headers = {"authorization": f"Bearer {key}"} if key else None
        self._http = httpx.Client(
            base_url=base_url, timeout=timeout, transport=transport, headers=headers
        )
        self._backoff = backoff or Backoff()

    def stream(
        self,
        message: str | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        **fields: Any,
    ) -> ChatStream:
        """A stream of typed events; `fields` are the request's other fields (model, ...)."""
        return ChatStream(self._http, chat_payload(message, messages, fields), self._backoff)

    def complete(
        self,
        message: str | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        **fields: Any,
    ) -> Answer:
        """The whole answer at once (`POST /api/chat`); raises StreamFailed on an error."""
        payload = chat_payload(message, messages, fields)
        response = self._http.post("/api/chat", json=payload, timeout=self._http.timeout)
        return answer_of(response.status_code, response.content)

    def models(self) -> dict[str, Any]:
        """`{"default": "sim/default", "models": [{"id": ...}, ...]}`"""
        response = self._http.get("/api/models")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
