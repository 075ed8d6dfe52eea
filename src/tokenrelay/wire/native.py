"""tokenrelay's own wire form: each event as `id: <stream_id>:<seq>` and its JSON payload as
data; and its error body.

The payload comes from orjson (or `json.dumps` with its defaults), which escapes line breaks,
so it is one `data:` line by construction and goes out as stored, with no re-encoding.
"""

from __future__ import annotations

from typing import Any

from tokenrelay.events import Event
from tokenrelay.wire.common import EventEncoder


class NativeEncoder(EventEncoder):
    """Renders one stream's events (one instance per response)."""

    __slots__ = ("_id_head",)

    def __init__(self, stream_id: str) -> None:
        self._id_head = b"id: " + stream_id.encode("ascii") + b":"

    def encode_one(self, event: Event) -> bytes:
        # Once per token: one C-level format with the stream's part of the id built once
        # is the cheapest way to build it (an f-string id and concatenations cost twice as much).
        return b"%s%d\ndata: %s\n\n" % (self._id_head, event.seq, event.data)


def error_object(error_type: str, message: str, **extra: Any) -> dict[str, Any]:
    """The native API's error body: `{"error": {"type", "message", ...}}`. `extra` holds what
    only this API reports (`fields`, `known_models`, `retryable`, `retry_after`, and last,
    `request_id`)."""
    return {"error": {"type": error_type, "message": message, **extra}}
