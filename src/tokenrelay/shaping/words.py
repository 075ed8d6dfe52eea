"""Word and line chunking: deliver whole words (or lines), never a word or a character cut.

Upstream tokens are sub-word pieces ("Hel", "lo,", " wor", "ld"). A `Chunker` takes them in and
gives back text that ends at a boundary: after a whitespace (or CJK punctuation) for words,
after a newline for lines. What follows the last boundary is held until more text shows where
it ends, or until the shaper's hold timer forces it out (`flush`): text with no boundaries at
all (Chinese, a long URL, minified code) still flows, at the timer's pace.

A cut is made only at a grapheme-cluster boundary, and only one that the text already proves:
a boundary at the very end of the held text is not yet known (the next token may start with a
combining mark, a skin-tone modifier or a zero-width joiner that belongs to the last cluster),
so the last cluster waits for the next token. A forced flush keeps back a cluster that visibly
continues (it ends with a joiner, or is half a flag); anything else goes out, because holding
the last character until the stream ends would break the hold limit. Concatenating everything
a chunker returns always gives exactly the text it was fed.
"""

from __future__ import annotations

from typing import Literal

import regex

ZWJ = "\u200d"
_GRAPHEME = regex.compile(r"\X")
# A word ends after whitespace, or after CJK punctuation (those scripts put no space there).
_WORD_BOUNDARY = regex.compile(r"[\s\u3000-\u3003\u300c-\u300f\uff01\uff0c\uff1a\uff1b\uff1f]")
_LINE_BOUNDARY = regex.compile(r"\n")
_REGIONAL_INDICATOR = regex.compile(r"^[\U0001F1E6-\U0001F1FF]$")


class Chunker:
    """Buffers text and releases it at word or line boundaries; see the module docstring."""

    def __init__(self, chunking: Literal["word", "line"]) -> None:
        self._boundary = _WORD_BOUNDARY if chunking == "word" else _LINE_BOUNDARY
        self._held = ""

    @property
    def held(self) -> str:
        return self._held

    def feed(self, text: str) -> str:
        """Take `text` in; return what is ready (may be "")."""
        if not text:
            return ""
        start = len(self._held)
        self._held += text
        # Only the new text can hold a new boundary (plus the last old character: a boundary
        # that was at the very end is provable now that something follows it).
        cut = self._last_proven_cut(max(0, start - 1))
        if cut == 0:
            return ""
        ready, self._held = self._held[:cut], self._held[cut:]
        return ready

    def flush(self, *, final: bool = False) -> str:
        """Release what is held: all of it if `final`, else all but a visibly open cluster."""
        if final or not self._held:
            ready, self._held = self._held, ""
            return ready
        last = _last_cluster_start(self._held)
        cluster = self._held[last:]
        keep = cluster.endswith(ZWJ) or bool(_REGIONAL_INDICATOR.match(cluster))
        cut = last if keep else len(self._held)
        ready, self._held = self._held[:cut], self._held[cut:]
        return ready

    def _last_proven_cut(self, since: int) -> int:
        """The end of the last boundary character after `since` that something follows, as long
        as that is a grapheme boundary (0 if there is none)."""
        held = self._held
        for match in reversed(list(self._boundary.finditer(held, since))):
            cluster = _GRAPHEME.match(held, match.start())
            assert cluster is not None  # \X matches any character
            if cluster.end() < len(held):
                return cluster.end()
        return 0


def _last_cluster_start(text: str) -> int:
    # Clusters are short: looking at the tail is enough, and keeps this O(1) per flush.
    offset = max(0, len(text) - 32)
    start = offset
    for match in _GRAPHEME.finditer(text, offset):
        start = match.start()
    return start
