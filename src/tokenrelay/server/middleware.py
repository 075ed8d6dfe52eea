"""A request id on every request, its response, and its log lines (`dispatch.Dispatcher`
gives each request one).

Each request logs one line, when its response starts: the request id, method, path and
status, and, for a request that started a stream, the stream's id and model (`note_stream`;
a resume names the stream it follows), and the name of the caller's API key (never the key;
a `key` field in JSON logs).
One line rather than a second one for the stream's start: a log line is a visible share of a
short stream's whole CPU.
"""

from __future__ import annotations

import logging
import secrets

from starlette.datastructures import MutableHeaders
from starlette.types import Message, Scope, Send

from tokenrelay import logs

logger = logging.getLogger("tokenrelay.http")


def new_request_id() -> str:
    return "req_" + secrets.token_hex(8)


_STREAM_NOTE = "tokenrelay.stream"  # in the scope's state: "<stream id> (<model>)"
KEY_NOTE = "tokenrelay.key"  # in the scope's state: the caller's ApiKey (server/auth.py)


def note_stream(scope: Scope, stream_id: str, model: str = "") -> None:
    """Name the stream this request started or follows, for its request line."""
    scope.setdefault("state", {})[_STREAM_NOTE] = f"{stream_id} ({model})" if model else stream_id


def begin_request(scope: Scope) -> str:
    """Give this request an id: in its scope, and in the log context of its task (and of the
    tasks it starts). Ours, not the caller's: ids must be trustworthy in logs."""
    request_id = new_request_id()
    scope.setdefault("state", {})["request_id"] = request_id
    logs.request_id.set(request_id)
    return request_id


class IdentifiedSend:
    """A `send` that puts the request id on the response start, logs the request line, and
    remembers whether the start went out (so a failure after it cannot send a 500).

    It acts on the response start only: body messages pass through unchanged, to
    `passes_bodies_to` (where `responses.writer_for` writes them)."""

    __slots__ = ("_scope", "passes_bodies_to", "request_id", "started")

    def __init__(self, scope: Scope, send: Send, request_id: str) -> None:
        self._scope = scope
        self.passes_bodies_to = send
        self.request_id = request_id
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            MutableHeaders(scope=message).append("x-request-id", self.request_id)
            scope = self._scope
            state = scope.get("state", {})
            stream = state.get(_STREAM_NOTE)
            key = state.get(KEY_NOTE)
            logger.info(
                "%s %s %s -> %s%s%s",
                self.request_id,
                scope["method"],
                scope["path"],
                message["status"],
                f", stream {stream}" if stream else "",
                f", key {key.name}" if key is not None else "",
                extra={"key": key.name} if key is not None else None,
            )
        await self.passes_bodies_to(message)
