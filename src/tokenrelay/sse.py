"""Server-Sent Events: encoding, and an incremental decoder that follows the WHATWG rules.

Pure functions and a small state machine, no I/O, so both are tested with byte strings written
out and with hypothesis (any text round-trips; any split of the bytes decodes the same).

Decoder rules (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
lines end with CRLF, LF or CR, including a CR at the end of one chunk and its LF at the start of
the next; a leading BOM is dropped; `:` starts a comment; one space after the colon is removed;
`id` values containing NUL are ignored; `retry` must be ASCII digits; an event is dispatched on a
blank line, and one without data is not dispatched; an unterminated event at the end is dropped.
UTF-8 bytes split across chunks are joined before decoding (an incremental codec).

One deliberate limit of the format itself: SSE cannot tell a CR from an LF inside `data`, so
`encode_event` turns every line break in text data into LF. tokenrelay's events carry JSON, where
line breaks are escaped, so token text survives byte for byte.
"""

from __future__ import annotations

import codecs
import re
from typing import NamedTuple

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_FORBIDDEN_IN_FIELD = re.compile(r"[\r\n\x00]")

PING = b": ping\n\n"
_new = tuple.__new__  # a named tuple built without its Python-level constructor (events.py)


class ServerSentEvent(NamedTuple):
    """One decoded event. A named tuple, like `events.Event`: one is built per upstream token,
    and a named tuple is cheaper to build than a frozen dataclass."""

    data: str
    event: str = "message"
    id: str = ""  # the last event id in force when this event was dispatched
    retry: int | None = None


def _field_value(name: str, value: str) -> str:
    if _FORBIDDEN_IN_FIELD.search(value):
        raise ValueError(f"SSE {name} must not contain CR, LF or NUL")
    return value


def encode_event(
    data: str, *, id: str | None = None, event: str | None = None, retry: int | None = None
) -> bytes:
    """Encode one event. Line breaks in `data` become separate `data:` lines (see module doc)."""
    parts: list[str] = []
    if id is not None:
        parts.append(f"id: {_field_value('id', id)}\n")
    if event is not None:
        parts.append(f"event: {_field_value('event', event)}\n")
    if retry is not None:
        parts.append(f"retry: {int(retry)}\n")
    parts.extend(f"data: {line}\n" for line in _LINE_BREAK.split(data))
    parts.append("\n")
    return "".join(parts).encode("utf-8")


def encode_comment(text: str) -> bytes:
    return "".join(f": {line}\n" for line in _LINE_BREAK.split(text)).encode("utf-8") + b"\n"


class SSEDecoder:
    """Feed it bytes as they arrive; it returns the events completed by each feed."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._at_start = True
        self._skip_lf = False
        self._data: list[str] = []
        self._event = ""
        self._last_id = ""
        self._retry: int | None = None
        # At an event boundary with nothing held back (no partial line, event or character):
        # the next chunk may take the fast path.
        self._clean = False

    @property
    def last_event_id(self) -> str:
        return self._last_id

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        if self._clean and chunk.endswith(b"\n\n") and b"\r" not in chunk:
            # What upstreams send nearly always: whole `data: ...` events, one line each. The
            # chunk ends on a line break, so it holds whole UTF-8 characters: the codec, which
            # is empty at a boundary, is not needed. Once per upstream read, so written flat.
            text = chunk.decode("utf-8", "replace")
            events = []
            for block in text[:-2].split("\n\n"):
                if not block.startswith("data: ") or "\n" in block:
                    break  # anything else takes the slow path, from the chunk's start
                events.append(
                    _new(ServerSentEvent, (block[6:], "message", self._last_id, self._retry))
                )
            else:
                return events
            events = self._feed_text(text)
        else:
            events = self._feed_text(self._utf8.decode(chunk))
        # A chunk ending in LF leaves the codec empty and no CR pending.
        self._clean = (
            chunk.endswith(b"\n") and not self._pending and not self._data and not self._event
        )
        return events

    def close(self) -> list[ServerSentEvent]:
        """End of stream: flush the codec. An event without its blank line is dropped (spec)."""
        events = self._feed_text(self._utf8.decode(b"", final=True))
        self._pending = ""
        self._data = []
        return events

    def _feed_text(self, text: str) -> list[ServerSentEvent]:
        if not text:
            return []
        if self._at_start:
            self._at_start = False
            text = text.removeprefix("\ufeff")
        if self._skip_lf:
            self._skip_lf = False
            text = text.removeprefix("\n")
        lines = _LINE_BREAK.split(self._pending + text)
        self._pending = lines.pop()
        # A CR ending this chunk may be the first half of a CRLF split across chunks.
        self._skip_lf = text.endswith("\r")
        events: list[ServerSentEvent] = []
        for line in lines:
            event = self._process_line(line)
            if event is not None:
                events.append(event)
        return events

    def _process_line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\x00" not in value:
                self._last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        # `retry` is the reconnection time in force, so it stays set across events.
        return ServerSentEvent("\n".join(data), event or "message", self._last_id, self._retry)
