"""Word chunking and structured output through the native API (and chunking on /v1)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from tests.conftest import quick_settings, sse_events
from tests.shaping.test_jsonstream import grows_into
from tokenrelay.server.app import create_app
from tokenrelay.sse import SSEDecoder

pytestmark = pytest.mark.anyio

PROMPT = "Explain TCP handshakes with a table and some code"


async def _stream(client: httpx.AsyncClient, **body: Any) -> list[dict[str, Any]]:
    response = await client.post("/api/chat/stream", json={"message": PROMPT, **body})
    assert response.status_code == 200, response.text
    return sse_events(response.content)


def _text(events: list[dict[str, Any]]) -> str:
    return "".join(e["content"] for e in events if e["type"] == "token")


async def test_word_chunking_gives_the_same_text_in_whole_words(client: httpx.AsyncClient) -> None:
    raw = await _stream(client, model="sim/fast")
    words = await _stream(client, model="sim/fast", chunking="word", max_hold_ms=1000)
    assert _text(words) == _text(raw)
    pieces = [e["content"] for e in words if e["type"] == "token"]
    assert len(pieces) < len([e for e in raw if e["type"] == "token"])
    for piece in pieces[:-1]:
        assert piece[-1].isspace() or piece[-1] in "。，", repr(piece)


async def test_line_chunking_gives_whole_lines(client: httpx.AsyncClient) -> None:
    events = await _stream(client, model="sim/fast", chunking="line", max_hold_ms=1000)
    pieces = [e["content"] for e in events if e["type"] == "token"]
    assert all(piece.endswith("\n") for piece in pieces[:-1])
    assert len(pieces) > 3


SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "steps": {"type": "array", "items": {"type": "string"}},
        "rating": {"type": "integer"},
    },
    "required": ["title", "steps", "rating"],
}


async def test_json_schema_answers_stream_partials_and_parsed(client: httpx.AsyncClient) -> None:
    events = await _stream(
        client,
        model="sim/fast",
        max_hold_ms=0,
        response_format={"type": "json_schema", "json_schema": {"name": "plan", "schema": SCHEMA}},
    )
    done = events[-1]
    assert done["type"] == "done", done
    assert set(done["parsed"]) == {"title", "steps", "rating"}
    assert isinstance(done["parsed"]["rating"], int)
    partials = [e["partial"] for e in events if e["type"] == "json"]
    assert len(partials) > 3
    for partial in partials:
        assert grows_into(partial, done["parsed"])


async def test_json_object_answers_parse(client: httpx.AsyncClient) -> None:
    events = await _stream(client, model="sim/fast", response_format={"type": "json_object"})
    assert events[-1]["type"] == "done"
    assert isinstance(events[-1]["parsed"], dict)


async def test_an_answer_that_breaks_the_schema_ends_with_invalid_output(
    client: httpx.AsyncClient,
) -> None:
    impossible = {"type": "object", "required": ["never_generated"]}
    events = await _stream(
        client,
        model="sim/fast",
        response_format={"type": "json_schema", "json_schema": {"schema": impossible}},
    )
    assert events[-1]["type"] == "error"
    assert events[-1]["error_type"] == "invalid_output"
    assert _text(events).strip().startswith("{")  # the raw text was still delivered


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"chunking": "sentence"}, "chunking"),
        ({"max_hold_ms": 5000}, "max_hold_ms"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": 5}}}},
            "response_format.json_schema.schema",
        ),
    ],
)
async def test_bad_shaping_fields_are_named(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/api/chat/stream", json={"message": "hi", **body})
    assert response.status_code == 422
    fields = [p["field"] for p in response.json()["error"]["fields"]]
    assert field in fields


async def test_the_server_default_chunking_applies_to_native_and_compat_by_its_own_setting() -> (
    None
):
    settings = quick_settings(chunking="word", compat_chunking="word", max_hold_ms=1000)
    app: Starlette = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        native = await _stream(client, model="sim/fast")
        body = {
            "model": "sim/fast",
            "stream": True,
            "messages": [{"role": "user", "content": PROMPT}],
        }
        compat = await client.post("/v1/chat/completions", json=body)
    native_pieces = [e["content"] for e in native if e["type"] == "token"]
    assert all(p[-1].isspace() for p in native_pieces[:-1])
    chunks = [e for e in sse_events_openai(compat.content) if e["choices"]]
    contents = [c["choices"][0]["delta"].get("content") or "" for c in chunks]
    contents = [c for c in contents if c]
    assert all(c[-1].isspace() for c in contents[:-1])


def sse_events_openai(body: bytes) -> list[dict[str, Any]]:
    decoder = SSEDecoder()
    return [
        orjson.loads(e.data) for e in decoder.feed(body) + decoder.close() if e.data != "[DONE]"
    ]


async def test_the_non_streaming_endpoint_returns_the_parsed_value(
    client: httpx.AsyncClient,
) -> None:
    fmt = {"type": "json_schema", "json_schema": {"schema": SCHEMA}}
    body = {"message": PROMPT, "model": "sim/fast", "response_format": fmt}
    response = await client.post("/api/chat", json=body)
    assert response.status_code == 200
    answer = response.json()
    assert answer["parsed"] == orjson.loads(answer["content"])
    impossible = {
        "type": "json_schema",
        "json_schema": {"schema": {"type": "object", "required": ["nope"]}},
    }
    failed = await client.post("/api/chat", json={**body, "response_format": impossible})
    assert failed.status_code == 502
    assert failed.json()["error"]["type"] == "invalid_output"
