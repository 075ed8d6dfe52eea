"""Every failure tokenrelay knows how to name, and what a client is told about each.

    TokenRelayError
    ├── RequestError                 the caller's fault; answered with a 4xx before any stream
    │   ├── MalformedJSON            400
    │   ├── InvalidRequest           422, with one entry per bad field
    │   ├── UnsupportedMediaType     415
    │   ├── PayloadTooLarge          413
    │   ├── InvalidEventId           400, a Last-Event-ID that is not `<stream_id>:<seq>`
    │   ├── CrossSiteStart           403, a GET from another site that would start a generation
    │   ├── Unauthorized             401, no API key where one is required, or a wrong one
    │   ├── ModelNotAllowed          403, a model the caller's key may not use
    │   ├── KeyOverLimit             429, the caller's key is over one of its limits
    │   ├── UnknownModel             404, listing the known models
    │   └── UnknownStream            404
    │       └── StreamExpired        410: it existed, and its TTL has passed
    ├── ServiceUnavailable           503: shutting down, not accepting new streams
    │   └── StoreUnavailable         503: the stream store (Redis) cannot be reached
    └── GenerationError              the generation failed; has an `error_type` and `retryable`
        ├── RateLimited              rate_limit
        ├── Overloaded               overloaded
        ├── UpstreamError            api_error (retryable: a 5xx)
        │   └── UpstreamRejected     api_error (not retryable: the upstream refused our key)
        │       └── RequestRefused   upstream_rejected, 400 (it refused this request: 400, 413,
        │                            422, e.g. a context too long for the model)
        ├── UpstreamTimeout          timeout
        ├── Stalled                  stalled
        ├── NetworkError             network_error
        ├── ContentFiltered          content_filter
        ├── StreamTooLarge           too_large
        ├── InvalidOutput            invalid_output (JSON asked for; the answer is not it)
        └── ShuttingDown             server_shutdown

What reaches a client never comes from `str(exception)` or from an upstream's body: it comes from
`CLIENT_MESSAGES`, keyed by error type. Details go to the log, next to the request id that the
client is given, so an operator can look them up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

CLIENT_MESSAGES: dict[str, str] = {
    "invalid_json": "The request body is not valid JSON.",
    "invalid_request": "The request has invalid fields.",
    "unsupported_media_type": "Send the request body as JSON with Content-Type: application/json.",
    "payload_too_large": "The request body is larger than this server accepts.",
    "unknown_model": "No such model.",
    "not_found": "No such resource.",
    "unknown_stream": "No such stream.",
    "stream_expired": "That stream has expired; start a new one.",
    "invalid_event_id": "Last-Event-ID must look like <stream_id>:<seq>.",
    "unauthorized": (
        "A valid API key is required: Authorization: Bearer <key>, or x-api-key: <key>."
    ),
    "model_not_allowed": "This API key may not use that model.",
    "key_limit": "This API key is over one of its limits; retry after Retry-After seconds.",
    "cross_site": (
        "A generation starts by GET only from this server's own pages or an origin in"
        " cors_origins; POST it instead."
    ),
    "method_not_allowed": "That method is not allowed here.",
    "service_unavailable": "The server is shutting down and accepts no new streams; retry shortly.",
    "store_unavailable": "The server cannot reach its stream store; retry shortly.",
    "internal_error": "Something went wrong on our side.",
    "cancelled": "The stream was cancelled before it finished.",
    "rate_limit": "The model provider is rate limiting requests; retry after a short wait.",
    "overloaded": "The model provider is overloaded; retry shortly.",
    "api_error": "The model provider returned an error.",
    "upstream_rejected": (
        "The model provider refused this request as invalid; the server log has its reason"
        " under the request id."
    ),
    "timeout": "The model provider did not answer in time.",
    "stalled": "The model provider stopped sending tokens.",
    "network_error": "The connection to the model provider failed.",
    "content_filter": "The model provider's content filter stopped the answer.",
    "too_large": "The answer grew past this server's limit for one stream.",
    "invalid_output": "The model's answer is not valid JSON for the requested format.",
    "server_shutdown": "The server shut down before the answer finished; retry.",
    "producer_lost": "The server generating this answer stopped unexpectedly; retry.",
}

# HTTP status for an error type when it can still be expressed as a status (before streaming).
HTTP_STATUS: dict[str, int] = {
    "invalid_json": 400,
    "invalid_request": 422,
    "unsupported_media_type": 415,
    "payload_too_large": 413,
    "unknown_model": 404,
    "not_found": 404,
    "unknown_stream": 404,
    "stream_expired": 410,
    "invalid_event_id": 400,
    "cross_site": 403,
    "unauthorized": 401,
    "model_not_allowed": 403,
    "key_limit": 429,
    "method_not_allowed": 405,
    "service_unavailable": 503,
    "store_unavailable": 503,
    "internal_error": 500,
    "cancelled": 409,
    "rate_limit": 429,
    "overloaded": 503,
    "api_error": 502,
    "upstream_rejected": 400,
    "timeout": 504,
    "stalled": 504,
    "network_error": 502,
    "content_filter": 422,
    "too_large": 502,
    "invalid_output": 502,
    "server_shutdown": 503,
    "producer_lost": 502,
}


def client_message(error_type: str) -> str:
    return CLIENT_MESSAGES.get(error_type, CLIENT_MESSAGES["internal_error"])


def http_status(error_type: str) -> int:
    return HTTP_STATUS.get(error_type, 500)


class TokenRelayError(Exception):
    error_type: ClassVar[str] = "internal_error"


# ---------------------------------------------------------------- the caller's fault


class RequestError(TokenRelayError):
    """A problem with the request itself. `detail` is safe to show: we wrote it, not the caller."""

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or client_message(self.error_type))
        self.detail = detail or client_message(self.error_type)


class MalformedJSON(RequestError):
    error_type = "invalid_json"


@dataclass(frozen=True, slots=True)
class FieldProblem:
    field: str
    problem: str


class InvalidRequest(RequestError):
    error_type = "invalid_request"

    def __init__(self, problems: list[FieldProblem]) -> None:
        summary = "; ".join(f"{p.field}: {p.problem}" for p in problems)
        super().__init__(f"Invalid request: {summary}")
        self.problems = problems


class UnsupportedMediaType(RequestError):
    error_type = "unsupported_media_type"


class PayloadTooLarge(RequestError):
    error_type = "payload_too_large"


class UnknownModel(RequestError):
    error_type = "unknown_model"

    def __init__(self, known: list[str]) -> None:
        super().__init__("No such model. Known models: " + ", ".join(known))
        self.known = known


class UnknownStream(RequestError):
    error_type = "unknown_stream"


class StreamExpired(UnknownStream):
    error_type = "stream_expired"


class InvalidEventId(RequestError):
    error_type = "invalid_event_id"


class CrossSiteStart(RequestError):
    error_type = "cross_site"


class Unauthorized(RequestError):
    error_type = "unauthorized"


class ModelNotAllowed(RequestError):
    error_type = "model_not_allowed"


class KeyOverLimit(RequestError):
    """`limit`: "concurrent", "requests" or "tokens". The figures make each dialect's rate
    limit headers (`server/dialects.py`)."""

    error_type = "key_limit"
    _WHICH: ClassVar[dict[str, str]] = {
        "concurrent": "This API key has as many streams open as it may.",
        "requests": "This API key has made as many requests this minute as it may.",
        "tokens": "This API key has used as many output tokens this minute as it may.",
    }

    def __init__(
        self,
        limit: str,
        *,
        retry_after: float,
        limit_requests: int | None,
        remaining_requests: int | None,
        reset_requests: float,
        limit_tokens: int | None,
        remaining_tokens: int | None,
        reset_tokens: float,
    ) -> None:
        super().__init__(self._WHICH.get(limit, client_message("key_limit")))
        self.limit = limit
        self.retry_after = retry_after
        self.limit_requests, self.remaining_requests = limit_requests, remaining_requests
        self.limit_tokens, self.remaining_tokens = limit_tokens, remaining_tokens
        self.reset_requests, self.reset_tokens = reset_requests, reset_tokens


class ServiceUnavailable(TokenRelayError):
    error_type = "service_unavailable"
    retry_after: ClassVar[int] = 5  # seconds, for the Retry-After header


class StoreUnavailable(ServiceUnavailable):
    """Redis cannot be reached (after `[redis] grace` for what was already under way): nothing
    can be started, stored, read or resumed until it is back."""

    error_type = "store_unavailable"
    retry_after = 2


# ---------------------------------------------------------------- the generation failed


class GenerationError(TokenRelayError):
    """A failure of the generation itself. Providers raise these; nothing else crosses out.

    `retry_after` (seconds) is honoured where the error can still become an HTTP status.
    """

    retryable: ClassVar[bool] = False

    def __init__(self, detail: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(detail or self.error_type)
        self.retry_after = retry_after


class RateLimited(GenerationError):
    error_type = "rate_limit"
    retryable = True


class Overloaded(GenerationError):
    error_type = "overloaded"
    retryable = True


class UpstreamError(GenerationError):
    error_type = "api_error"
    retryable = True


class UpstreamRejected(UpstreamError):
    """A 4xx from the upstream that is our side's fault (a bad key, a forbidden model): retrying
    cannot help, and the caller is not to blame, so it stays a 502."""

    retryable = False


class RequestRefused(UpstreamRejected):
    """The upstream called this request invalid (400, 413, 422: a context too long, a
    parameter it does not take). The caller gets a 400, which SDKs do not retry, in place of a
    502, which they retried twice over for nothing. A 404 stays a 502: a wrong base URL or
    model map is ours."""

    error_type = "upstream_rejected"


class UpstreamTimeout(GenerationError):
    error_type = "timeout"
    retryable = True


class Stalled(GenerationError):
    error_type = "stalled"
    retryable = True


class ProducerLost(GenerationError):
    """The replica producing a stream died, and what it wrote cannot be continued."""

    error_type = "producer_lost"
    retryable = True


class NetworkError(GenerationError):
    error_type = "network_error"
    retryable = True


class ContentFiltered(GenerationError):
    error_type = "content_filter"


class StreamTooLarge(GenerationError):
    error_type = "too_large"


class InvalidOutput(GenerationError):
    """The answer is not JSON, or breaks the schema. Asking again may well produce valid output."""

    error_type = "invalid_output"
    retryable = True


class ShuttingDown(GenerationError):
    error_type = "server_shutdown"
    retryable = True
