"""A bad request names the field as the caller wrote it and says what is wrong in our words:
no union branches, no model class names, never the caller's value."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.anyio

USER = "user"
OPENAI_TEXT = [{"type": "text", "text": "hi"}]


def _openai(content: Any) -> dict[str, Any]:
    return {"model": "sim/fast", "messages": [{"role": USER, "content": content}]}


def _anthropic(content: Any) -> dict[str, Any]:
    return {"model": "sim/fast", "max_tokens": 5, "messages": [{"role": USER, "content": content}]}


def _native(**fields: Any) -> dict[str, Any]:
    return {"model": "sim/fast", **fields}


CASES = [
    (
        "/v1/chat/completions",
        _openai([{"type": "image_url", "image_url": {"url": "ftp://x.test/a.png"}}]),
        "messages[0].content[0].image_url.url: "
        "must be an https: or http: URL, or a base64 data: URL",
    ),
    (
        "/v1/chat/completions",
        _openai([{"type": "image_url", "image_url": "https://x.test/a.png"}]),
        "messages[0].content[0].image_url: must be an object",
    ),
    (
        "/v1/chat/completions",
        _openai([{"type": "input_audio_secret", "input_audio": {}}]),
        "messages[0].content[0]: type must be one of 'text', 'image_url', 'file'",
    ),
    ("/v1/chat/completions", _openai(7), "messages[0].content: must be a string or a list"),
    (
        "/v1/messages",
        _anthropic([{"type": "image", "source": {"type": "base64"}}]),
        "messages[0].content[0].source: a base64 source needs data and media_type",
    ),
    (
        "/v1/messages",
        _anthropic([{"type": "image", "source": {"type": "url"}}]),
        "messages[0].content[0].source: a url source needs url",
    ),
    (
        "/v1/messages",
        _anthropic([{"type": "text", "text": "hi"}, {"type": "tool_use", "id": "t", "name": "f"}]),
        "messages[0].content[1].input: is required",
    ),
    (
        "/api/chat",
        _native(messages=[{"role": "user", "content": [{"type": "image", "url": "x"}]}]),
        "messages[0].content[0].url: must be an https: or http: URL, or a base64 data: URL",
    ),
    (
        "/api/chat",
        _native(message="hi", tool_choice="maybe"),
        "tool_choice: must be one of 'auto', 'none' or 'required' or an object",
    ),
    (
        "/api/chat",
        _native(message="hi", tools=[{"name": "no spaces please"}]),
        "tools[0].name: must be 1 to 64 letters, digits, '_' or '-'",
    ),
]


CASES += [
    (
        "/v1/chat/completions",
        _openai([{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]),
        "messages[0].content[0].image_url.url: "
        "must be an https: or http: URL, or a base64 data: URL",
    ),
    (
        "/v1/chat/completions",
        {"model": "sim/fast", "messages": [{"role": "user", "content": None}]},
        "messages[0]: a user message needs content",
    ),
    (
        "/v1/chat/completions",
        {"model": "sim/fast", "messages": [{"role": "tool", "content": "18 C"}]},
        "messages[0]: tool_call_id goes with role tool, and only with it",
    ),
    (
        "/v1/chat/completions",
        {**_openai("hi"), "max_completion_tokens": 10**9},
        "max_completion_tokens: must be at most 65536",
    ),
    (
        "/v1/messages",
        _anthropic([{"type": "tool_use", "id": "t", "name": "f", "input": {}}]),
        "messages[0]: a user turn cannot hold tool_use",
    ),
    (
        "/v1/messages",
        {**_anthropic("hi"), "tool_choice": {"type": "tool"}},
        "tool_choice: name goes with type tool, and only with it",
    ),
    (
        "/v1/messages",
        _anthropic([{"type": "image", "source": {"type": "text", "data": "x"}}]),
        "messages[0].content[0]: an image's source is base64 or url",
    ),
    # A forced call of a tool that is not there: every upstream refuses it, so we name it.
    (
        "/v1/chat/completions",
        {
            **_openai("hi"),
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": {"type": "function", "function": {"name": "g"}},
        },
        "tool_choice.function.name: names no tool in tools",
    ),
    (
        "/v1/messages",
        {**_anthropic("hi"), "tool_choice": {"type": "any"}},
        "tool_choice: asks for a tool call, with no tools",
    ),
    (
        "/api/chat",
        _native(message="hi", tools=[{"name": "f"}], tool_choice={"name": "g"}),
        "tool_choice.name: names no tool in tools",
    ),
]


@pytest.mark.parametrize(("path", "body", "expected"), CASES)
async def test_a_bad_field_is_named_and_explained(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], expected: str
) -> None:
    r = await client.post(path, json=body)
    assert r.status_code in (400, 422)
    message = r.json()["error"]["message"]
    assert message == f"Invalid request: {expected}"
    for leak in ("tagged-union", "list[", "Input tag", "OpenAI", "Anthropic", "In)", "secret"):
        assert leak not in message


async def test_tools_and_image_parts_are_accepted(client: httpx.AsyncClient) -> None:
    # What issue #9 found refused: tools ("at most 0 items") and image parts (union branches).
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    body = {**_openai([*OPENAI_TEXT, image]), "tools": [tool]}
    r = await client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200


async def test_a_callers_own_key_is_named_whatever_its_shape(client: httpx.AsyncClient) -> None:
    body = {"model": "sim/fast", "message": "x", "Temperature": 0.5, "list[x]": 1}
    r = await client.post("/api/chat", json=body)
    fields = [f["field"] for f in r.json()["error"]["fields"]]
    assert fields == ["Temperature", '"list[x]"']  # quoted: not an index


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions", "/v1/messages"])
async def test_a_callers_key_comes_back_quoted_and_cut_never_as_markup(
    client: httpx.AsyncClient, path: str
) -> None:
    body = _native(message="hi") if path == "/api/chat" else _anthropic("hi")
    body["<img src=x onerror=alert(1)>" + "x" * 500] = 1
    r = await client.post(path, json=body)
    assert r.status_code in (400, 422)
    message = r.json()["error"]["message"]
    assert "<" not in message
    assert ">" not in message
    assert '"\\u003cimg src=x onerror=alert(1)\\u003exxxx' in message
    assert '…": unknown field' in message
    assert len(message) < 200
