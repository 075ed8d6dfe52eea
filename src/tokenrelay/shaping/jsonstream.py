"""JSON answers as they stream: the value so far (`partial`), and the whole value at the end.

`PartialJSON` collects the answer's text. `partial()` parses what has arrived with jiter's
partial mode (in Rust, a few hundred MB/s) and returns a value that only ever grows:

- an object shows a key once its value has started (a string, an object, an array) or is a
  complete number or literal; a key, once shown, stays;
- a string only grows (an escape sequence or surrogate pair is shown once complete);
- a number, `true`, `false` or `null` appears only once complete. jiter already hides an
  unfinished literal and a number ending in `-`, `.`, `e` or `+`; a number that ends in a digit
  at the very end of the text may still grow (`12` then `123`), so that tail is cut off first;
- arrays only grow, and only their last element changes.

Each call parses the whole text, so the shaper calls it only when it will send a `json` event,
and it sends those within a byte budget proportional to the answer (see shaper.py): the total
parsing work stays linear in the answer's length, not quadratic.

`final()` parses the complete text strictly (jiter, partial mode off, no NaN or Infinity):
surrounding whitespace is allowed, anything else around the value is not. Integers keep their
precision past 64 bits (orjson would turn them into floats). With a schema, the value is
validated with `jsonschema` (Draft 2020-12). Both failures raise `InvalidOutput`.
"""

from __future__ import annotations

from typing import Any

import jiter
import regex

from tokenrelay.errors import InvalidOutput
from tokenrelay.schemas import first_error, validator

# A number still being written at the very end of the text: where a value starts (the start,
# or after `:`, `[`, `,`), digits up to the end. Only the tail is searched: numbers are short.
# Inside a string this can match too ("a: 12"); those few characters then show a token later.
_OPEN_NUMBER_TAIL = regex.compile(r"(?<=(?:^|[:\[,])\s*)-?[0-9][0-9.eE+\-]*$")
_TAIL = 64

NOTHING: Any = object()  # no value yet (nothing complete enough to show)


class PartialJSON:
    def __init__(self, schema: dict[str, Any] | None = None) -> None:
        self._parts: list[str] = []
        self.size = 0  # characters of text so far
        self._validator = validator(schema) if schema else None

    def feed(self, text: str) -> None:
        self._parts.append(text)
        self.size += len(text)

    @property
    def text(self) -> str:
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def partial(self) -> Any:
        """The value so far, or NOTHING; see the module docstring for what it promises."""
        text = self.text
        tail = _OPEN_NUMBER_TAIL.search(text, max(0, len(text) - _TAIL))
        if tail is not None:
            text = text[: tail.start()]
        if not text.strip():
            return NOTHING
        try:
            return jiter.from_json(
                text.encode(), partial_mode="trailing-strings", allow_inf_nan=False
            )
        except ValueError:
            return NOTHING  # not JSON (yet, or at all): final() will say which

    def final(self) -> Any:
        """The whole value, validated; raises InvalidOutput."""
        try:
            value = jiter.from_json(self.text.encode(), allow_inf_nan=False)
        except ValueError:
            raise InvalidOutput("the answer is not valid JSON") from None
        if self._validator is not None:
            error = first_error(self._validator, value)
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path) or "(root)"
                raise InvalidOutput(f"schema violation at {where}: {error.validator}")
        return value
