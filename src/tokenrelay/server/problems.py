"""Pydantic's validation errors as field problems a caller can act on, in every dialect.

Each problem names the field as the caller wrote it (`messages[0].content[1].image_url.url`)
and says what is wrong in words of our own. Two things pydantic does are undone here:

- A union reports one error per branch, with the branch's name in the location
  (`content.str`, `content.list[tagged-union[...]][0]`). The branch that got furthest into the
  value is the one the caller meant, so only its errors are kept, and branch names never
  appear in a path.
- Some messages quote the caller's value (a union's unknown tag). Caller input never goes
  back verbatim, so those come from the table below instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from tokenrelay.errors import FieldProblem
from tokenrelay.server.native_models import DATA_URL, URL_OR_DATA

_PATTERN_TEXT = {
    r"^[^\x00-\x1f\x7f]+$": "must not contain control characters",
    URL_OR_DATA: "must be an https: or http: URL, or a base64 data: URL",
    r"^https?://": "must be an http: or https: URL",
    DATA_URL: "must be a base64 data: URL (data:<media type>;base64,<data>)",
    r"^[A-Za-z0-9_-]{1,64}$": "must be 1 to 64 letters, digits, '_' or '-'",
}

Loc = tuple[int | str, ...]


class _Key(str):
    """A location part that is the caller's key (an unknown field): never a union's branch,
    whatever it looks like."""


def problems_of(error: ValidationError) -> list[FieldProblem]:
    items = [
        {**item, "loc": (*item["loc"][:-1], _Key(item["loc"][-1]))}
        if item["type"] == "extra_forbidden"
        else item
        for item in error.errors(include_url=False, include_input=False)
    ]
    kept = _furthest_branches(items)
    problems: list[FieldProblem] = []
    for item in kept:
        problem = FieldProblem(_field_path(item["loc"]), _text(item))
        if problem not in problems:
            problems.append(problem)
    return problems


def _text(item: Any) -> str:
    kind, ctx = item["type"], item.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "is required"
    if kind == "string_pattern_mismatch":
        return _PATTERN_TEXT.get(str(ctx.get("pattern")), "is not in the expected format")
    if kind == "union_tag_invalid":
        return f"type must be one of {ctx.get('expected_tags', '')}"
    if kind == "union_tag_not_found":
        return "needs a type"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return "must be an object"  # pydantic's text names our model class
    message: str = item["msg"]
    return message.removeprefix("Value error, ")


_BRANCH_TYPES = frozenset({"str", "int", "float", "bool", "none"})
_BRANCH_PREFIXES = ("list[", "dict[", "literal[", "function-", "tagged-union[", "nullable[")


def _is_branch(part: int | str) -> bool:
    """Whether a location part names a union's branch (`str`, `list[...]`, `literal[...]`, one
    of our models) rather than a field or a key, which may be the caller's own words."""
    if isinstance(part, int | _Key):
        return False
    return part in _BRANCH_TYPES or part.startswith(_BRANCH_PREFIXES) or part in _model_names()


@cache
def _model_names() -> frozenset[str]:
    """Our request models' class names, as pydantic names a union's branches."""
    found: set[str] = set()
    pending: list[type[BaseModel]] = [BaseModel]
    while pending:
        for model in pending.pop().__subclasses__():
            pending.append(model)
            if model.__module__.startswith("tokenrelay."):
                found.add(model.__name__)
    return frozenset(found)


def _clean(loc: Loc) -> Loc:
    """The location without branch names, nor the tag a tagged union picked its branch by."""
    out: list[int | str] = []
    skip_tag = False
    for part in loc:
        if _is_branch(part):
            skip_tag = skip_tag or "tagged-union[" in str(part)
            continue
        if skip_tag and isinstance(part, str):
            skip_tag = False
            continue
        out.append(part)
    return tuple(out)


def _site(loc: Loc) -> Loc:
    """Where the first union is: the location up to its first branch name."""
    for index, part in enumerate(loc):
        if _is_branch(part):
            return loc[:index]
    return loc


def _branch(loc: Loc) -> int | str | None:
    return next((part for part in loc if _is_branch(part)), None)


def _furthest_branches(items: Sequence[Any]) -> list[Any]:
    """Of each union's branches, the errors of the one that went deepest, with their
    locations cleaned; a value that no branch could enter at all gets one error saying what
    it may be. Errors outside unions all stay."""
    depth: dict[tuple[Loc, int | str], int] = {}
    for item in items:
        branch = _branch(item["loc"])
        if branch is not None:
            key = (_site(item["loc"]), branch)
            depth[key] = max(depth.get(key, 0), len(_clean(item["loc"])))
    best: dict[Loc, int | str] = {}
    for (site, branch), deepest in depth.items():  # in order: the first wins a tie
        if site not in best or deepest > depth[(site, best[site])]:
            best[site] = branch
    kept, told = [], set()
    for item in items:
        branch = _branch(item["loc"])
        site = _site(item["loc"])
        if branch is None:
            kept.append(item)
        elif depth[(site, best[site])] == len(site) and len(_kinds(items, site)) > 1:
            if site not in told:  # no branch got in: say what the value may be, once
                told.add(site)
                kinds = " or ".join(_kinds(items, site))
                kept.append({"loc": site, "type": "wrong_kind", "msg": f"must be {kinds}"})
        elif best[site] == branch:
            kept.append({**item, "loc": _clean(item["loc"])})
    return kept


_KINDS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}


def _kinds(items: Sequence[Any], site: Loc) -> list[str]:
    """What the union at `site` takes, in words: one entry a branch."""
    kinds: list[str] = []
    for item in items:
        branch = _branch(item["loc"])
        if branch is None or _site(item["loc"]) != site:
            continue
        name = str(branch)
        if item["type"] == "literal_error":
            kind = f"one of {item.get('ctx', {}).get('expected', '')}"
        elif name.startswith("list["):
            kind = "a list"
        else:
            kind = _KINDS.get(name, "an object")
        if kind not in kinds:
            kinds.append(kind)
    return kinds


def _field_path(loc: Loc) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{shown_key(part)}" if path else shown_key(part)
    return path or "body"


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
_SHOWN_KEY_CHARS = 32


def shown_key(key: str) -> str:
    """A key as a message may show it: as is if it is a plain name, else quoted as JSON,
    cut at 32 characters, with `<`, `>` and `&` escaped. A caller's key is the caller's
    input: it must not come back as markup, nor at any length."""
    if _PLAIN_KEY.fullmatch(key):
        return key
    cut = key[:_SHOWN_KEY_CHARS] + ("…" if len(key) > _SHOWN_KEY_CHARS else "")
    quoted = orjson.dumps(cut).decode()
    return quoted.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
