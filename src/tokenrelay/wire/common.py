"""Helpers shared by the dialects: safe labels from untrusted bodies, usage, SSE lines."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import Any

import orjson

from tokenrelay.events import Event

_LABEL = re.compile(r"[A-Za-z0-9_.\-]{1,48}")


def safe_label(value: Any) -> str:
    """An upstream's error `type` or `code`, if it looks like an identifier; else `?`.

    Upstream error bodies may carry anything (keys, prompts, internal hosts). We keep only
    short identifier-like labels for our logs; messages are never kept.
    """
    return value if isinstance(value, str) and _LABEL.fullmatch(value) else "?"


def data_line(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def named_event(name: str, payload: Any) -> bytes:
    return b"event: " + name.encode("ascii") + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def as_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class EventEncoder(ABC):
    """Renders a stream's events in one dialect's wire form: one instance per response, which
    knows what it needs of the stream (its id, the model, the completion's id)."""

    __slots__ = ()

    def encode(self, events: list[Event]) -> bytes:
        """A batch, as one write (a reader catching up)."""
        return b"".join(map(self.encode_one, events))

    @abstractmethod
    def encode_one(self, event: Event) -> bytes:
        """One event: the live path, once per token, so it takes no list."""
