"""Errors, rendered in one place per API dialect: native, OpenAI, Anthropic.

Whatever fails (a bad request, an unknown route, a stream that ended before its first token,
an unexpected exception), the client gets its own API's error shape and status, so each SDK
parses it. The dialect is chosen by the route (`dialect_of`): `/v1/messages` is Anthropic's and
`/v1/chat/completions` OpenAI's; another `/v1/` route is Anthropic's for the Anthropic SDK (it
sends `anthropic-version`) and OpenAI's otherwise; everything else is native. Each wire module
owns its dialect's error object (`wire/*.py error_object`), which in-band stream errors use
too; this module adds the statuses and the response around it. Messages come from our own
table (errors.py) or our own validation text, never from an exception or an upstream; the
request id is in the `x-request-id` header of every response, and in the native body.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Scope

from tokenrelay.errors import KeyOverLimit, client_message, http_status
from tokenrelay.wire import anthropic, native, openai

ErrorObject = Callable[..., dict[str, Any]]


def _openai_object(error_type: str, message: str, **extra: Any) -> dict[str, Any]:
    fields = extra.get("fields")  # OpenAI names one field, as `param`
    return openai.error_object(error_type, message, fields[0]["field"] if fields else None)


def _anthropic_object(error_type: str, message: str, **extra: Any) -> dict[str, Any]:
    return anthropic.error_object(error_type, message)


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    error_object: ErrorObject  # (error_type, message, **extra) -> the JSON error body
    statuses: dict[str, int] = field(default_factory=dict)  # where it differs from ours

    def status(self, error_type: str) -> int:
        return self.statuses.get(error_type, http_status(error_type))

    def error_body(
        self, error_type: str, request_id: str, message: str | None = None, **extra: Any
    ) -> bytes:
        text = message or client_message(error_type)
        return orjson.dumps(self.error_object(error_type, text, **extra, request_id=request_id))

    def error_response(
        self,
        error_type: str,
        request_id: str,
        *,
        message: str | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> Response:
        """The error as a whole response; `message` must be our own words."""
        return Response(
            self.error_body(error_type, request_id, message, **extra),
            status_code=status or self.status(error_type),
            media_type="application/json",
            headers=headers,
        )


_INVALID = {"invalid_json": 400, "invalid_request": 400}  # as OpenAI and Anthropic answer it
NATIVE = Dialect("native", native.error_object)
OPENAI = Dialect("openai", _openai_object, _INVALID)
ANTHROPIC = Dialect("anthropic", _anthropic_object, {**_INVALID, "overloaded": 529})


def dialect_of(scope: Scope) -> Dialect:
    path: str = scope.get("path", "")
    if not path.startswith("/v1/"):
        return NATIVE
    if path.startswith("/v1/messages"):
        return ANTHROPIC
    if path.startswith("/v1/chat/completions"):
        return OPENAI  # its stream errors are OpenAI's whatever the caller sent
    headers = scope.get("headers", ())
    return ANTHROPIC if any(name == b"anthropic-version" for name, _ in headers) else OPENAI


def retry_after_header(seconds: float | None) -> dict[str, str]:
    """`Retry-After` in whole seconds (at least 1), or no header."""
    return {} if seconds is None else {"retry-after": str(max(1, round(seconds)))}


def limit_headers(dialect: Dialect, exc: KeyOverLimit) -> dict[str, str]:
    """A key's limits as its caller's API states them, with `Retry-After`: Anthropic's
    `anthropic-ratelimit-*` on its routes, OpenAI's `x-ratelimit-*` everywhere else. A limit
    the key does not have is left out."""
    headers = retry_after_header(exc.retry_after)
    rows = (
        ("requests", exc.limit_requests, exc.remaining_requests, exc.reset_requests),
        ("tokens", exc.limit_tokens, exc.remaining_tokens, exc.reset_tokens),
    )
    for kind, limit, remaining, reset in rows:
        if limit is None:
            continue
        if dialect is ANTHROPIC:
            name = "requests" if kind == "requests" else "output-tokens"
            at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=reset)
            headers[f"anthropic-ratelimit-{name}-limit"] = str(limit)
            headers[f"anthropic-ratelimit-{name}-remaining"] = str(remaining or 0)
            headers[f"anthropic-ratelimit-{name}-reset"] = at.isoformat(timespec="seconds")
        else:
            headers[f"x-ratelimit-limit-{kind}"] = str(limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(remaining or 0)
            headers[f"x-ratelimit-reset-{kind}"] = f"{max(0.0, reset):.3f}s"
    return headers
