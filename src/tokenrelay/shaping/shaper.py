"""One stream's shaping: chunked text and `json` partials, paced by one hold timer.

The producer feeds each upstream text delta to `feed`. The shaper calls `emit_text` with
whatever the chunker releases and `emit_json` with a partial value when it changed, both
synchronously (the stream log's `append_nowait`). Text is never held longer than `max_hold`
seconds and `json` events go out at most once per `max_hold`: when something is waiting, a
loop timer fires at the hold limit and releases it, even if the upstream has gone quiet. The
timer is moved only when something must go out sooner than it is set for; otherwise it fires,
releases what is due, and is set again for the rest.

`json` partials are sent within a byte budget: all partials of a stream together stay under
JSON_BUDGET_PER_CHAR bytes per character of the answer, plus JSON_BUDGET_FREE. A partial
carries the whole value so far, so without the budget a long answer would cost quadratic bytes
(in the log and on the wire) and quadratic parsing. Small answers are never slowed by it;
a long one gets partials spaced by a roughly constant fraction of its length.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tokenrelay._types import Chunking
from tokenrelay.shaping.jsonstream import NOTHING, PartialJSON
from tokenrelay.shaping.words import Chunker

JSON_BUDGET_PER_CHAR = 8
JSON_BUDGET_FREE = 64 * 1024


@dataclass(frozen=True, slots=True)
class Shaping:
    """What a request asked for: chunking, JSON partials (with an optional schema)."""

    chunking: Chunking = "token"
    max_hold: float = 0.05
    json: bool = False
    schema: dict[str, Any] | None = None

    @property
    def active(self) -> bool:
        return self.chunking != "token" or self.json


class Shaper:
    def __init__(
        self,
        shaping: Shaping,
        emit_text: Callable[[str], None],
        emit_json: Callable[[Any], int],
    ) -> None:
        self._emit_text = emit_text
        self._emit_json = emit_json  # returns the bytes it sent
        self._max_hold = shaping.max_hold
        self._chunker = Chunker(shaping.chunking) if shaping.chunking != "token" else None
        self.json = PartialJSON(shaping.schema) if shaping.json else None
        self._loop = asyncio.get_running_loop()
        self._held_since: float | None = None  # when the chunker started holding text
        self._json_pending = False
        self._json_sent_at = -1e9
        self._json_bytes = 0
        self._last_partial: Any = NOTHING
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf  # loop time
        self.failure: Exception | None = None  # raised in a timer callback; see feed()

    def feed(self, text: str) -> None:
        if self.failure is not None:
            raise self.failure
        if self.json is not None:
            self.json.feed(text)
            self._json_pending = True
        if self._chunker is None:
            self._emit_text(text)
        else:
            ready = self._chunker.feed(text)
            if ready:
                self._emit_text(ready)
            if not self._chunker.held:
                self._held_since = None
            elif ready or self._held_since is None:
                # What is held now arrived with this text (a cut leaves only new text behind);
                # otherwise the clock keeps running from when holding began.
                self._held_since = self._loop.time()
        self._release()

    def finish(self) -> Any:
        """Release everything; return the parsed value (NOTHING without JSON).

        Raises InvalidOutput (from PartialJSON.final) after the text is out."""
        if self.failure is not None:
            raise self.failure
        self.close()
        if self.json is None:
            return NOTHING
        value = self.json.final()
        # The whole value as a last json event, unless that would break the spacing: `done`
        # carries it as `parsed` right after, so nothing is lost.
        spaced = self._loop.time() >= self._json_sent_at + self._max_hold
        if spaced and value != self._last_partial and self._json_affordable():
            self._emit_json(value)
        return value

    def flush_text(self) -> None:
        """Release held text now: what comes next is not text (reasoning, a tool call) and
        must not overtake it, nor land inside it (an Anthropic block holds one kind)."""
        if self._chunker is not None and self._chunker.held:
            self._emit_text(self._chunker.flush(final=True))
            self._held_since = None

    def close(self) -> None:
        """Release held text (the stream is ending, however it ends); stop the timer."""
        self._disarm()
        if self._chunker is not None and self._chunker.held:
            self._emit_text(self._chunker.flush(final=True))

    def _release(self) -> None:
        """Send whatever is due; arm the timer for whatever has to wait."""
        now = self._loop.time()
        wake_at: float | None = None
        if self._chunker is not None and self._held_since is not None:
            if now - self._held_since >= self._max_hold:
                ready = self._chunker.flush()
                if ready:
                    self._emit_text(ready)
                self._held_since = now if self._chunker.held else None
            if self._held_since is not None:
                wake_at = self._held_since + self._max_hold
        if self._json_pending:
            due = self._json_sent_at + self._max_hold
            if now >= due and self._json_affordable():
                self._send_partial(now)
            elif now < due:
                wake_at = due if wake_at is None else min(wake_at, due)
        if wake_at is None:
            self._disarm()
        elif wake_at < self._timer_at:  # a later wake-up waits for the timer already set
            self._disarm()
            self._timer_at = wake_at
            self._timer = self._loop.call_at(wake_at, self._on_timer)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, math.inf

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, math.inf
        try:
            self._release()
        except Exception as exc:  # e.g. the log refused: the producer raises it on its next step
            self.failure = exc

    def _json_affordable(self) -> bool:
        assert self.json is not None
        budget = JSON_BUDGET_FREE + JSON_BUDGET_PER_CHAR * self.json.size
        return self._json_bytes + self.json.size <= budget  # a partial is about the text's size

    def _send_partial(self, now: float) -> None:
        assert self.json is not None
        self._json_pending = False
        partial = self.json.partial()
        if partial is NOTHING or partial == self._last_partial:
            return
        self._last_partial = partial
        self._json_sent_at = now
        self._json_bytes += self._emit_json(partial)
