"""The one place an upstream's HTTP answer becomes a GenerationError.

    HTTP 429                          RateLimited (Retry-After / retry-after-ms honoured)
    HTTP 503, 529, *overloaded*       Overloaded
    HTTP 408, 504                     UpstreamTimeout
    other 5xx                         UpstreamError (retryable)
    HTTP 400, 413, 422                RequestRefused (the request is at fault; a 400 to the caller)
    other 4xx, and any 3xx            UpstreamRejected (not retryable: our key, our model list,
                                      our base URL; a redirect is never followed)

An error body is read up to `ERROR_BODY_LIMIT` only to pick out identifier-like labels
(`type`, `code`) for the log. Its message and the headers are never kept: none of them reach a
client or a log line.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

import orjson

from tokenrelay.errors import (
    GenerationError,
    Overloaded,
    RateLimited,
    RequestRefused,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
)
from tokenrelay.wire.common import safe_label

ERROR_BODY_LIMIT = 64 * 1024
_REQUEST_AT_FAULT = frozenset((400, 413, 422))


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from `retry-after-ms` or `retry-after` (seconds or an HTTP date).

    `headers` is case-insensitive (aiohttp's), or has lower-case names."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _labels(body: bytes) -> tuple[str, str]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "?", "?"
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return "?", "?"
    return safe_label(error.get("type")), safe_label(error.get("code"))


def status_error(
    name: str, status: int, headers: Mapping[str, str], body: bytes
) -> GenerationError:
    kind, code = _labels(body)
    detail = f"{name}: HTTP {status} type={kind} code={code}"
    retry_after = parse_retry_after(headers)
    if status == 429:
        return RateLimited(detail, retry_after=retry_after)
    if status in (503, 529) or "overloaded" in kind:
        return Overloaded(detail, retry_after=retry_after)
    if status in (408, 504):
        return UpstreamTimeout(detail)
    if status >= 500:
        return UpstreamError(detail, retry_after=retry_after)
    if status in _REQUEST_AT_FAULT:
        return RequestRefused(detail)
    return UpstreamRejected(detail)
