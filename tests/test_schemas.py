"""Callers' JSON Schemas never reach outside the process, nor stall it on a pattern."""

from __future__ import annotations

import re
import socket
import threading
from typing import Any

import pytest

from tokenrelay.schemas import first_error, schema_problem, validator


def test_a_schema_that_refers_to_a_url_is_refused_and_nothing_is_fetched() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    schema = {"properties": {"city": {"$ref": f"http://127.0.0.1:{port}/x"}}}
    assert schema_problem(schema) == (
        "may only refer within itself ($ref to #...): nothing is fetched"
    )
    # Whatever slips past the check: the validator's registry retrieves nothing.
    assert first_error(validator(schema), {"city": "Paris"}) is None
    with pytest.raises(TimeoutError):
        listener.accept()  # nobody came
    listener.close()


def test_references_within_the_schema_work_and_must_resolve() -> None:
    schema = {
        "$defs": {"city": {"type": "string", "minLength": 2}},
        "properties": {"city": {"$ref": "#/$defs/city"}},
    }
    assert schema_problem(schema) is None
    checker = validator(schema)
    assert first_error(checker, {"city": "Oslo"}) is None
    assert first_error(checker, {"city": "O"}) is not None
    dangling = {"properties": {"city": {"$ref": "#/$defs/missing"}}}
    assert schema_problem(dangling) == "has a $ref that points at nothing in it"


def test_patterns_never_run_on_pythons_re(monkeypatch: pytest.MonkeyPatch) -> None:
    """`re` backtracks without limit while holding the event loop; the `regex` module with a
    time limit runs every caller pattern instead."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a caller's pattern ran on re")

    monkeypatch.setattr(re, "search", refuse)
    monkeypatch.setattr(re, "match", refuse)
    schema = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^(a+)+$"}},
        "patternProperties": {"^x-": {"type": "integer"}},
        "additionalProperties": False,
    }
    checker = validator(schema)
    assert first_error(checker, {"code": "aaa", "x-n": 1}) is None
    assert first_error(checker, {"code": "a" * 40 + "!"}) is not None  # runs out: no match
    assert first_error(checker, {"code": "aa", "other": 1}) is not None
    assert first_error(checker, {"x-n": "not a number"}) is not None


def test_a_runaway_pattern_is_cut_short_off_the_event_loop_thread() -> None:
    done = threading.Event()
    result: list[Any] = []

    def check() -> None:
        schema = {"type": "string", "pattern": "^(a+)+$"}
        result.append(first_error(validator(schema), "a" * 64 + "!"))
        done.set()

    threading.Thread(target=check, daemon=True).start()
    assert done.wait(timeout=60), "the pattern ran on without a limit"
    assert result[0] is not None


def test_unevaluated_properties_beside_pattern_properties_are_refused() -> None:
    schema = {"patternProperties": {"^a": {}}, "unevaluatedProperties": False}
    assert schema_problem(schema) == "may not use unevaluatedProperties with patternProperties"


def test_a_broken_schema_is_named_by_its_keyword_never_by_the_callers_words() -> None:
    problem = schema_problem({"properties": {"sk-live-SECRET<script>": {"type": "str"}}})
    assert problem is not None
    assert "SECRET" not in problem
    assert "str" not in problem.replace("(Draft", "")
