"""Logs: JSON lines carrying request and stream ids, and nothing that looks like a key."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import orjson
import pytest

from tests.realserver import real_server
from tokenrelay import logs


def record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    made = logging.LogRecord("tokenrelay.test", logging.INFO, __file__, 1, message, args, exc_info)
    logs.ContextFilter().filter(made)
    return made


def test_json_lines_carry_the_ids_from_the_context() -> None:
    token = logs.request_id.set("req_0123")
    try:
        line = logs.JsonFormatter().format(record("stream %s started", "str_x"))
    finally:
        logs.request_id.reset(token)
    entry = orjson.loads(line)
    assert entry["message"] == "stream str_x started"
    assert entry["request_id"] == "req_0123"
    assert "stream_id" not in entry  # none in the context: left out, not empty
    assert entry["level"] == "info"
    assert entry["ts"].endswith("Z")


@pytest.mark.parametrize(
    "secret",
    [
        "sk-proj-Abc123def456ghi789",
        "sk-ant-api03-abcdefghijkl",
        "Bearer eyJhbGciOiJIUzI1NiJ9.payload",
        "x-api-key: key-0123456789",
    ],
)
def test_key_shaped_text_is_redacted_in_both_formats(secret: str) -> None:
    try:
        raise RuntimeError(f"upstream said {secret}")
    except RuntimeError as exc:
        made = record("failed with %s", secret, exc=exc)
    hidden = secret.split()[-1]
    for formatter in (logs.JsonFormatter(), logs.TextFormatter()):
        line = formatter.format(made)
        assert hidden not in line
        assert "[redacted]" in line


def test_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        logs.log_config("xml")


@pytest.mark.server
def test_server_logs_json_with_request_and_stream_ids(tmp_path: Path) -> None:
    with real_server(tmp_path, env={"TOKENRELAY_LOG_FORMAT": "json"}) as server:
        body = {"message": "hi", "model": "sim/fast", "max_tokens": 5}
        response = httpx.post(f"{server.url}/api/chat/stream", json=body, timeout=10)
        request_id = response.headers["x-request-id"]
        stream_id = response.headers["x-stream-id"]
        server.terminate()
        lines = server.log().splitlines()
    banner, entries = lines[0], [orjson.loads(line) for line in lines[1:]]
    assert banner.startswith("tokenrelay ")  # the one plain line, printed before logging starts
    mine = [e for e in entries if e.get("request_id") == request_id]
    [line] = mine  # one line per request: the request line, naming its stream and model
    assert line["logger"] == "tokenrelay.http"
    assert line["message"].endswith(f"POST /api/chat/stream -> 200, stream {stream_id} (sim/fast)")
    assert line["stream_id"] == stream_id
    assert any(e["logger"].startswith("uvicorn") for e in entries)
