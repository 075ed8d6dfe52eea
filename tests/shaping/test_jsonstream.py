"""Partial JSON: every prefix gives a value that only grows toward the final one."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenrelay.errors import InvalidOutput
from tokenrelay.schemas import schema_problem
from tokenrelay.shaping.jsonstream import NOTHING, PartialJSON


def _partial(text: str) -> Any:
    parser = PartialJSON()
    parser.feed(text)
    return parser.partial()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", NOTHING),
        ("  ", NOTHING),
        ("-", NOTHING),
        ("1.", NOTHING),
        ("1e", NOTHING),
        ("12", NOTHING),  # may still become 123
        ('{"a": 12', {}),
        ('{"a": 12,', {"a": 12}),
        ('{"a": -', {}),
        ('{"a": 1.5e', {}),
        ('{"a": tr', {}),
        ('{"a": true', {"a": True}),
        ('{"a": nul', {}),
        ('{"ke', {}),  # a key shows with its value, not before
        ('{"key": ', {}),
        ('{"key": "', {"key": ""}),
        ('{"key": "va', {"key": "va"}),
        ('{"k": "a\\', {"k": "a"}),  # half an escape is not shown
        ('{"k": "a\\u00e', {"k": "a"}),
        ('{"k": "a\\u00e9', {"k": "aé"}),
        ('{"k": "\\ud83d', {"k": ""}),  # half a surrogate pair
        ('{"k": "\\ud83d\\ude00', {"k": "😀"}),
        ('{"k": [1, 2', {"k": [1]}),
        ('{"k": [1, 2]', {"k": [1, 2]}),
        ('{"k": [{"a": "x"}, {"b', {"k": [{"a": "x"}, {}]}),
        ('"top-level str', "top-level str"),
        ("[", []),
    ],
)
def test_partials(text: str, expected: Any) -> None:
    assert _partial(text) == expected


def test_final_parses_and_allows_surrounding_whitespace() -> None:
    parser = PartialJSON()
    parser.feed('\n {"a": [1, 2.5, "x"]}\n')
    assert parser.final() == {"a": [1, 2.5, "x"]}


@pytest.mark.parametrize("text", ['{"a": 1', '{"a": 1} trailing words', "", "```json\n{}\n```"])
def test_final_rejects_what_is_not_one_json_value(text: str) -> None:
    parser = PartialJSON()
    parser.feed(text)
    with pytest.raises(InvalidOutput):
        parser.final()


def test_final_validates_against_the_schema() -> None:
    schema = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
    ok, bad = PartialJSON(schema), PartialJSON(schema)
    ok.feed('{"name": "Ada"}')
    bad.feed('{"name": 42}')
    assert ok.final() == {"name": "Ada"}
    with pytest.raises(InvalidOutput):
        bad.final()


def test_schema_problem_names_an_unusable_schema() -> None:
    assert schema_problem({"type": "object"}) is None
    problem = schema_problem({"type": "no-such-type"})
    assert problem is not None
    assert "not a valid JSON Schema" in problem


def grows_into(partial: Any, final: Any) -> bool:
    """True when `partial` is a monotonic step toward `final` (see jsonstream's docstring)."""
    if partial is NOTHING:
        return True
    if isinstance(final, dict):
        return isinstance(partial, dict) and all(
            key in final and grows_into(value, final[key]) for key, value in partial.items()
        )
    if isinstance(final, list):
        if not isinstance(partial, list) or len(partial) > len(final):
            return False
        settled = all(
            p == f and type(p) is type(f) for p, f in zip(partial[:-1], final, strict=False)
        )
        return settled and (not partial or grows_into(partial[-1], final[len(partial) - 1]))
    if isinstance(final, str):
        return isinstance(partial, str) and final.startswith(partial)
    return bool(partial == final and type(partial) is type(final))


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(codec="utf-8"), max_size=12),
    st.sampled_from(['quote " and \\ backslash', "tab\tnew\nline", "é😀\u0301", "\x00\x1f"]),
)
documents = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(value=documents, ascii_only=st.booleans(), indent=st.sampled_from([None, 2]))
def test_every_prefix_is_a_monotonic_step_toward_the_final_value(
    value: Any, ascii_only: bool, indent: int | None
) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only, indent=indent)
    final = json.loads(text)
    previous: Any = NOTHING
    for end in range(len(text) + 1):
        partial = _partial(text[:end])
        assert grows_into(partial, final), (text[:end], partial)
        assert grows_into(previous, partial if partial is not NOTHING else previous)
        if partial is not NOTHING:
            previous = partial
    parser = PartialJSON()
    parser.feed(text)
    assert parser.final() == final
