"""Resuming a stream: the Last-Event-ID, where it comes from, and what it may ask for.

A resume names the last event the client has, `<stream_id>:<seq>`, in the `Last-Event-ID`
header (what EventSource sends when it reconnects) or the `last_event_id` query parameter (for
fetch clients). The answer replays every later event exactly once, then follows live:

    malformed id                         400 invalid_event_id
    unknown stream                       404 unknown_stream
    existed, TTL passed                  410 stream_expired
    client already has the ending        204 (EventSource stops reconnecting on 204)

Without API keys the stream id is the capability. With them, a stream belongs to the key that
started it, and any other key is told it does not exist (`authorize`).
"""

from __future__ import annotations

import re

from starlette.requests import Request

from tokenrelay.errors import InvalidEventId, UnknownStream
from tokenrelay.streams.log import StreamLog, StreamMeta

_EVENT_ID = re.compile(r"(str_[A-Za-z0-9_-]{16,64}):([0-9]{1,9})")
_MAX_HEADER = 200


def last_event_id(request: Request) -> tuple[str, int] | None:
    """The (stream id, seq) a request resumes from, or None if it does not resume."""
    raw = request.headers.get("last-event-id")
    if raw is None:
        raw = request.query_params.get("last_event_id")
    if raw is None:
        return None
    match = _EVENT_ID.fullmatch(raw.strip()) if len(raw) <= _MAX_HEADER else None
    if match is None:
        raise InvalidEventId()
    return match[1], int(match[2])


def authorize(meta: StreamMeta, principal: str) -> None:
    """Only the creator may attach or cancel once streams have owners (authentication)."""
    if meta.owner and meta.owner != principal:
        raise UnknownStream()  # not 403: do not confirm that someone else's stream exists


async def resume_point(log: StreamLog, stream_id: str, after: int, principal: str) -> int | None:
    """The cursor to replay from, or None when the client already has the terminal event."""
    status = await log.status(stream_id)  # raises UnknownStream / StreamExpired
    meta = await log.meta(stream_id)
    if meta is None:
        raise UnknownStream()
    authorize(meta, principal)
    if after > status.last_seq:
        raise InvalidEventId()  # an id from the future: not one we sent
    if status.ended and after >= status.last_seq:
        return None
    return after
