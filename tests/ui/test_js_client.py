"""/static/tokenrelay.js in the browser: the SSE parser against ours, at every split point."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ui.browser import Page
from tokenrelay.sse import SSEDecoder

pytestmark = pytest.mark.server

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
