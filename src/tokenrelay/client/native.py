"""A small client for the native streaming API: events as dicts, the stream id, cancel.

Used by `tokenrelay chat`, the benchmarks and the tests. Resume with `Last-Event-ID` builds on
`last_event_id` here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson

from tokenrelay.sse import SSEDecoder


class StreamFailed(Exception):
    """The server refused to start the stream; `status` and `error` are its JSON error."""

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        super().__init__(f"{status} {error.get('type')}: {error.get('message')}")
        self.status = status
        self.error = error


class NativeStream:
    """Iterate `events()`; `stream_id` is known once the response headers are in."""

    def __init__(self, client: httpx.Client, payload: dict[str, Any]) -> None:
        self._client = client
        self._payload = payload
        self.stream_id = ""
        self.last_event_id = ""

    def events(self) -> Iterator[dict[str, Any]]:
        with self._client.stream("POST", "/api/chat/stream", json=self._payload) as response:
            if response.status_code != 200:
                response.read()
                raise StreamFailed(response.status_code, _error_of(response))
            self.stream_id = response.headers.get("x-stream-id", "")
            decoder = SSEDecoder()
            for chunk in response.iter_bytes():
                for event in decoder.feed(chunk):
                    self.last_event_id = event.id
                    yield orjson.loads(event.data)

    def cancel(self) -> bool:
        if not self.stream_id:
            return False
        response = self._client.delete(f"/api/streams/{self.stream_id}")
        return response.status_code in (200, 202)


def _error_of(response: httpx.Response) -> dict[str, Any]:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return {"type": "http_error", "message": f"HTTP {response.status_code}"}
    return dict(error)
