"""Callers' JSON Schemas (`response_format`, a tool's `parameters`): checked when the request
arrives, and validated against without anything leaving the process or stalling it.

A caller's schema is hostile input, and two parts of JSON Schema reach beyond a pure check:

- `$ref` to a URL, which jsonschema would fetch with a blocking `urlopen` on the event loop
  (a request forgery, and every stream frozen while it hangs). Only references within the
  schema itself (`#...`) are taken, each must resolve when the request arrives, and the
  validators' registry refuses to retrieve anything, whatever slipped through.
- Regular expressions (`pattern`, `patternProperties`, and `additionalProperties`, which
  consults the patterns). Python's `re` can backtrack for minutes on a crafted pattern while
  holding the event loop; here they run on the `regex` module with a time limit, and a
  search that runs out counts as no match. `unevaluatedProperties` beside
  `patternProperties` is refused, as jsonschema would search those with `re`.

Validation messages name the failing keyword, never the caller's values.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import regex
from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable
from referencing.jsonschema import DRAFT202012

PATTERN_SECONDS = 0.05  # one search's limit: a sane pattern takes microseconds


def _retrieve_nothing(uri: str) -> Resource[Any]:
    raise NoSuchResource(uri)


_REGISTRY: Registry[Any] = Registry(retrieve=_retrieve_nothing)  # type: ignore[call-arg]


def _matches(pattern: str, text: str) -> bool:
    try:
        return regex.search(pattern, text, timeout=PATTERN_SECONDS) is not None
    except (TimeoutError, regex.error):
        return False


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    if validator.is_type(instance, "string") and not _matches(pattern, instance):
        yield ValidationError("does not match its pattern")


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: Any
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _matches(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Any
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    named = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    extras = [
        key
        for key in instance
        if key not in named and not any(_matches(pattern, key) for pattern in patterns)
    ]
    if validator.is_type(additional, "object"):
        for key in extras:
            yield from validator.descend(instance[key], additional, path=key)
    elif additional is False and extras:
        yield ValidationError(f"{len(extras)} properties are not allowed here")


_Validator = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    {
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
    },
)


def schema_problem(schema: Any) -> str | None:
    """Why `schema` cannot be used, or None. The reason names the keyword, never the
    caller's values (input does not go back verbatim)."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return f"is not a valid JSON Schema (Draft 2020-12): its {exc.validator} is wrong"
    keywords = set(_keywords(schema))
    if "patternProperties" in keywords and "unevaluatedProperties" in keywords:
        return "may not use unevaluatedProperties with patternProperties"
    resolver = _REGISTRY.resolver_with_root(
        Resource.from_contents(schema, default_specification=DRAFT202012)
    )
    for reference in _references(schema):
        if not reference.startswith("#"):
            return "may only refer within itself ($ref to #...): nothing is fetched"
        try:
            resolver.lookup(reference)
        except Unresolvable:
            return "has a $ref that points at nothing in it"
    return None


def validator(schema: dict[str, Any]) -> Validator:
    """A validator for a schema `schema_problem` passed."""
    checker: Validator = _Validator(schema, registry=_REGISTRY)
    return checker


def first_error(checker: Validator, value: Any) -> ValidationError | None:
    """The first way `value` breaks the schema, or None; a reference that cannot be resolved
    is not the value's fault, so it passes."""
    try:
        return next(iter(checker.iter_errors(value)), None)
    except Unresolvable:
        return None


def _keywords(schema: Any) -> Iterator[str]:
    if isinstance(schema, dict):
        for key, value in schema.items():
            yield key
            yield from _keywords(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _keywords(item)


def _references(schema: Any) -> Iterator[str]:
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                yield value
            else:
                yield from _references(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _references(item)
