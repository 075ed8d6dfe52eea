"""/static/tokenrelay.js in the browser: the SSE parser against ours, at every split point;
reasoning, tool calls and usage delivered to their handlers, from the sim and from the mock
upstream speaking Anthropic's API (the one that counts the prompt before the answer)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import sse_events
from tests.realserver import MockUpstream, RealServer, real_server
from tests.tcpproxy import cuttable_proxy
from tests.ui.browser import Page
from tokenrelay.client import Client
from tokenrelay.sse import SSEDecoder

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream) -> Iterator[RealServer]:
    """The page's server, with an Anthropic upstream at the mock as well as the sim."""
    config = f"""
[sim]
ttft = 0.05
tokens_per_second = 200.0
[upstreams.anthropic]
kind = "anthropic"
base_url = "{mock.url}"
"""
    with real_server(tmp_path_factory.mktemp("js-client"), config) as running:
        yield running


# Byte-level splits: every two-piece split, then one byte at a time, through TextDecoder's
# stream mode, as the page reads a fetch body.
PARSE_SPLITS = """async (bytes) => {
  const { SSEParser } = await import('/static/tokenrelay.js');
  const data = new Uint8Array(bytes);
  const parse = (pieces) => {
    const decoder = new TextDecoder('utf-8');
    const parser = new SSEParser();
    const events = [];
    for (const piece of pieces) events.push(...parser.feed(decoder.decode(piece, {stream: true})));
    events.push(...parser.feed(decoder.decode()));
    return JSON.stringify(events.map(e => [e.type, e.data, e.id]));
  };
  const results = new Set();
  for (let i = 0; i <= data.length; i++) results.add(parse([data.slice(0, i), data.slice(i)]));
  results.add(parse([...data].map(b => new Uint8Array([b]))));
  return [...results];
}"""

STREAMS = {
    "crlf and multi-byte": (
        'id: s:1\r\ndata: {"t":"héllo 👋🏽"}\r\n\r\n'
        ": ping\r\n\r\n"
        "event: custom\r\ndata: line one\r\ndata: line two\r\n\r\n"
    ),
    "bare cr": "id: s:2\rdata: a\r\rdata:b\rid: s:3\r\r",
    "lf, no space after colon, empty data": "data:x\n\ndata\n\nid: s:4\ndata: \n\n",
}


def _reference(text: str) -> list[list[Any]]:
    decoder = SSEDecoder()
    events = decoder.feed(text.encode()) + decoder.close()
    return [[e.event, e.data, e.id] for e in events]


@pytest.mark.parametrize("name", STREAMS)
def test_the_js_parser_agrees_with_the_servers_at_every_split(page: Page, name: str) -> None:
    import json

    body = STREAMS[name].encode()
    results = page.page.evaluate(PARSE_SPLITS, list(body))
    assert len(results) == 1, "the result depended on where the body was split"
    assert json.loads(results[0]) == _reference(STREAMS[name])


TOOLS = [
    {"name": name, "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    for name in ("get_weather", "get_time")
]
# Every handler records what it was given: the typed value first, then the payload and the id.
STREAM_WITH_HANDLERS = """async (body) => {
  const { streamChat } = await import('/static/tokenrelay.js');
  const seen = [];
  const copy = (call) => ({...call});
  const result = await streamChat(body, {
    onReasoning: (text, data, id) => seen.push(['reasoning', text, data, id]),
    onToolCallStart: (call, data, id) => seen.push(['start', copy(call), data, id]),
    onToolCallDelta: (call, data, id) => seen.push(['delta', copy(call), data, id]),
    onToolCallEnd: (call, data, id) => seen.push(['end', copy(call), data, id]),
    onUsage: (usage, data, id) => seen.push(['usage', usage, data, id]),
  });
  return {seen, streamId: result.streamId, message: result.answer.message(),
          usage: result.answer.usage};
}"""


def _wire_events(server: RealServer, stream_id: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{server.url}/api/streams/{stream_id}", timeout=10).content
    return sse_events(body)


@pytest.mark.parametrize("model", ["sim/think+tools", "anthropic/fast+think+tools"])
def test_reasoning_calls_and_usage_reach_their_handlers(
    page: Page, server: RealServer, model: str
) -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "Weather in Lima?"}]}
    result = page.page.evaluate(STREAM_WITH_HANDLERS, {**body, "model": model, "tools": TOOLS})
    seen = result["seen"]
    wire = [e for e in _wire_events(server, result["streamId"]) if e["type"] != "token"]
    handled = {"reasoning", "tool_call", "usage"}
    # Every such event reached its handler once, in order, with its payload and id.
    assert [(data, id_) for _, _, data, id_ in seen] == [
        ({k: v for k, v in e.items() if k != "_id"}, e["_id"]) for e in wire if e["type"] in handled
    ]
    assert [text for kind, text, _, _ in seen if kind == "reasoning"] == [
        e["content"] for e in wire if e["type"] == "reasoning"
    ]
    so_far: dict[int, str] = {}
    for kind, call, data, _ in seen:
        if kind in ("start", "delta", "end"):
            assert call["name"] == {0: "get_weather", 1: "get_time"}[call["index"]]
            assert call["ended"] == (kind == "end")
        if kind == "delta":  # the call folded so far: its arguments' text up to this piece
            so_far[call["index"]] = so_far.get(call["index"], "") + data["arguments"]
            assert call["argumentsText"] == so_far[call["index"]]
        if kind == "end":
            assert call["arguments"] == json.loads(so_far[call["index"]]) == data["arguments"]
    with Client(server.url) as client:
        whole = client.complete(**body, model=model, tools=TOOLS)
    assert result["message"] == whole.message()
    assert result["usage"] == whole.usage
    usage_events = [value for kind, value, _, _ in seen if kind == "usage"]
    if model.startswith("anthropic/"):  # Anthropic counts the prompt before the answer
        assert len(usage_events) == 1
        assert whole.usage is not None
        assert usage_events[0]["prompt_tokens"] == whole.usage["prompt_tokens"]
    else:
        assert usage_events == []


# Starts a ResumableStream and leaves it running; the test cuts the connection meanwhile.
START_RESUMABLE = """(body) => {
  window.__deltas = 0;
  import('/static/tokenrelay.js').then(({ ResumableStream }) => {
    const stream = new ResumableStream(body, {
      onToolCallDelta: () => { window.__deltas += 1; },
    }, { baseDelayMs: 50 });
    stream.start().then((ending) => {
      window.__result = { finish: ending.finish_reason, resumes: stream.resumes,
                          message: stream.answer.message(),
                          texts: stream.answer.toolCalls.map((call) => call.argumentsText) };
    });
  });
}"""


def test_a_drop_inside_a_tool_call_resumes_into_the_same_call(
    browser: object, server: RealServer, request: pytest.FixtureRequest
) -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "Time in Quito?"}]}
    with cuttable_proxy(server.url) as proxy:
        page = Page(browser, proxy.url, request.node.name)
        page.page.evaluate(START_RESUMABLE, {**body, "model": "sim/think+tools", "tools": TOOLS})
        page.page.wait_for_function("window.__deltas > 0", timeout=30_000)
        proxy.cut()
        page.page.wait_for_function("window.__result !== undefined", timeout=30_000)
        result = page.page.evaluate("window.__result")
        page.problems.remove("console: Failed to load resource: net::ERR_CONNECTION_RESET")
        page.close()
    with Client(server.url) as client:
        whole = client.complete(**body, model="sim/think+tools", tools=TOOLS)
    assert result["resumes"] >= 1
    assert result["finish"] == "tool_calls"
    assert result["message"] == whole.message()  # nothing lost or doubled in the calls
    assert [json.loads(text) for text in result["texts"]] == [c.arguments for c in whole.tool_calls]
