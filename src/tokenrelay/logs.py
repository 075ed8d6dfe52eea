"""Log records that carry their request and stream ids, as text or one JSON object a line.

The ids travel in context variables rather than in every call: the request-id middleware sets
`request_id`, and a stream's producer task, created inside that request, inherits it (asyncio
copies the context into a new task) and sets its own `stream_id`. `ContextFilter` copies both
onto each record, so a line logged anywhere below knows which request and stream it is about.

Secrets never reach a log line: nothing logs keys or upstream headers, and as a second line of
defence every message and traceback passes through `redact`, which masks what looks like an
API key or a bearer token.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
from typing import Any

import orjson

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
stream_id: contextvars.ContextVar[str] = contextvars.ContextVar("stream_id", default="")

LOG_FORMATS = ("text", "json")

_SECRET = re.compile(
    r"(?i)(sk-(?:ant-)?[A-Za-z0-9_\-]{8,}"  # OpenAI and Anthropic key shapes
    r"|\btr-[A-Za-z0-9_\-]{8,}|\btrs_[A-Za-z0-9_.\-]{8,}"  # ours: keys and stream tokens
    r"|(?<=bearer )[A-Za-z0-9._~+/\-]{8,}=*"  # Authorization: Bearer <token>
    r"|(?<=x-api-key: )\S{8,}|(?<=api-key: )\S{8,})"
)


def redact(text: str) -> str:
    return _SECRET.sub("[redacted]", text)


class ContextFilter(logging.Filter):
    """Adds `request_id` and `stream_id` (from the context, unless given in `extra`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", ""):
            record.request_id = request_id.get()
        if not getattr(record, "stream_id", ""):
            record.stream_id = stream_id.get()
        return True


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts (UTC, ISO 8601), level, logger, message, the ids, and the
    caller's API key name on request lines."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key in ("request_id", "stream_id", "key"):  # key: an API key's name, never a key
            value = getattr(record, key, "")
            if value:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(entry).decode()


def _iso(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def skip_unused_record_fields() -> None:
    """Stop computing what no format of ours prints: the caller's file and line (a stack walk),
    thread, process and multiprocessing names. The logging HOWTO's "Optimization" section
    names these switches. About a quarter of a line's cost; for a served process only."""
    logging._srcfile = None  # the documented switch (typeshed lists it)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def log_config(log_format: str = "text") -> dict[str, Any]:
    """A `logging.config.dictConfig` for uvicorn and tokenrelay, in the chosen format."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    text = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"}
        if log_format == "json"
        else {"()": f"{__name__}.TextFormatter", "fmt": text}
    )
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "tokenrelay",
        "filters": ["context"],
        "stream": "ext://sys.stderr",
    }
    quiet = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": f"{__name__}.ContextFilter"}},
        "formatters": {"tokenrelay": formatter},
        "handlers": {"default": handler},
        "loggers": {
            "tokenrelay": quiet,
            "uvicorn": quiet,
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["default"], "level": "WARNING", "propagate": False},
        },
    }
