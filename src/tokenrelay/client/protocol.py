"""What both clients do, without I/O: the requests, the resume rules, the errors and answers.

`Client` and `AsyncClient` differ only in how they wait; everything they decide is here, so
the two cannot drift apart. The rules:

- A stream is started once, with `POST /api/chat/stream`, and never POSTed again: after a
  dropped connection it is resumed with `GET /api/streams/{id}` and `Last-Event-ID`, which
  replays exactly the events after the last one received.
- A drop before the stream id is known cannot be resumed (the server may or may not have
  started a generation): it raises `ConnectionLost` rather than risk paying twice.
- Resumes back off exponentially with full jitter; any event received resets the count.
- Streams are started with `on_disconnect: "detach"` unless the caller says otherwise, so the
  generation survives the drop long enough to be resumed; leaving a stream early (breaking out
  of the loop, closing it) therefore cancels it explicitly.
- Every event received is folded into the stream's `StreamedAnswer` (text, reasoning, calls),
  across resumes, exactly once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import orjson

from tokenrelay.client.events import StreamEvent, parse_event
from tokenrelay.client.folding import (
    AssembledCall,
    ReasoningBlock,
    StreamedAnswer,
    assistant_message,
)
from tokenrelay.sse import ServerSentEvent


class StreamFailed(Exception):
    """The server refused the request; `status` and `error` are its JSON error."""

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        super().__init__(f"{status} {error.get('type')}: {error.get('message')}")
        self.status = status
        self.error = error


class ConnectionLost(Exception):
    """The connection dropped and the stream could not be resumed."""


@dataclass(frozen=True, slots=True)
class Backoff:
    max_resumes: int = 6  # in a row, without an event in between
    base: float = 0.25  # seconds
    cap: float = 8.0

    def delay(self, failures: int) -> float:
        return random.uniform(0, min(self.cap, self.base * 2 ** (failures - 1)))


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole answer, from `complete()` (the non-streaming endpoint)."""

    stream_id: str
    content: str
    model: str
    finish_reason: str
    usage: dict[str, Any] | None
    data: dict[str, Any] = field(repr=False)

    @property
    def parsed(self) -> Any:
        """The validated JSON value when `response_format` asked for JSON, else None."""
        return self.data.get("parsed")

    @property
    def tool_calls(self) -> list[AssembledCall]:
        """The calls the model made, all ended (`arguments_text` is given only with an
        `invalid_json` error: the whole answer has the parsed value otherwise)."""
        calls = self.data.get("tool_calls") or []
        return [_ended_call(index, call) for index, call in enumerate(calls)]

    @property
    def reasoning(self) -> list[ReasoningBlock]:
        blocks = self.data.get("reasoning") or []
        return [
            ReasoningBlock(b.get("content", ""), b.get("signature", ""), b.get("redacted", ""))
            for b in blocks
        ]

    def message(self) -> dict[str, Any]:
        """This answer as the assistant turn of the next request's `messages`."""
        return assistant_message(self.content, self.tool_calls, self.reasoning)


def _ended_call(index: int, call: dict[str, Any]) -> AssembledCall:
    return AssembledCall(
        index,
        call["id"],
        call["name"],
        call.get("arguments_text", ""),
        call.get("arguments"),
        call.get("error", ""),
        ended=True,
    )


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str
    json: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def chat_payload(
    message: str | None, messages: list[dict[str, Any]] | None, fields: dict[str, Any]
) -> dict[str, Any]:
    if (message is None) == (messages is None):
        raise ValueError("pass exactly one of message or messages")
    payload: dict[str, Any] = {"message": message} if message is not None else {}
    if messages is not None:
        payload["messages"] = messages
    payload.update({k: v for k, v in fields.items() if v is not None})
    return payload


def refusal(status: int, body: bytes) -> StreamFailed:
    try:
        error = orjson.loads(body)["error"]
        if not isinstance(error, dict):
            raise TypeError
    except (orjson.JSONDecodeError, KeyError, TypeError):
        error = {"type": "http_error", "message": f"HTTP {status}"}
    return StreamFailed(status, error)


def answer_of(status: int, body: bytes) -> Answer:
    if status != 200:
        raise refusal(status, body)
    data = orjson.loads(body)
    return Answer(
        data["id"], data["content"], data["model"], data["finish_reason"], data.get("usage"), data
    )


class Resumption:
    """One stream's progress: where to resume from, and whether to try again."""

    def __init__(self, payload: dict[str, Any], backoff: Backoff) -> None:
        self._payload = {"on_disconnect": "detach", **payload}
        self._backoff = backoff
        self.stream_id = ""
        self.last_event_id = ""
        self.ended = False
        self.resumes = 0  # how many times this stream was resumed, in all
        self.answer = StreamedAnswer()
        self._failures = 0

    def first_request(self) -> HttpRequest:
        return HttpRequest("POST", "/api/chat/stream", self._payload)

    def resume_request(self) -> HttpRequest:
        headers = {"last-event-id": self.last_event_id} if self.last_event_id else {}
        return HttpRequest("GET", f"/api/streams/{self.stream_id}", headers=headers)

    def accept(self, status: int, headers: dict[str, str] | Any, body: bytes | None) -> bool:
        """Check a response's head: True to read events, False if the stream had ended (204).

        `body` is the read body for a non-200 status (None for 200 and 204).
        """
        if status == 204:
            self.ended = True
            return False
        if status != 200:
            raise refusal(status, body or b"")
        self.stream_id = self.stream_id or headers.get("x-stream-id", "")
        return True

    def take(self, sse: ServerSentEvent) -> StreamEvent:
        event = self.answer.add(parse_event(sse.id, orjson.loads(sse.data)))
        if sse.id:
            self.last_event_id = sse.id
            self.stream_id = self.stream_id or sse.id.rpartition(":")[0]
        self._failures = 0
        self.ended = event.terminal
        return event

    def dropped(self, cause: BaseException | None) -> float:
        """The connection ended before the terminal event: seconds to wait, then resume."""
        if not self.stream_id:
            raise ConnectionLost("dropped before the stream started; not resent") from cause
        self._failures += 1
        if self._failures > self._backoff.max_resumes:
            raise ConnectionLost(f"stream {self.stream_id}: gave up resuming") from cause
        self.resumes += 1
        return self._backoff.delay(self._failures)

    def cancel_request(self) -> HttpRequest | None:
        if self.ended or not self.stream_id:
            return None
        return HttpRequest("DELETE", f"/api/streams/{self.stream_id}")
