"""The Python floor: the leanest relay on tokenrelay's stack, with no features at all.

Raw ASGI on uvicorn (uvloop, httptools), the aiohttp client and orjson. It takes the native
API's `POST /api/chat/stream`, asks the upstream (`$FLOOR_UPSTREAM`, an OpenAI-compatible
server) for a streamed completion and writes each token as a native `token` event, then a
`done`. No log, no ids, no resume, no cancel, no validation, no deadlines. Whatever tokenrelay
costs beyond this is what its features cost (docs/performance.md).

    FLOOR_UPSTREAM=http://127.0.0.1:9000/v1 python -m uvicorn benchmarks.floor_relay:app \
        --loop uvloop --http httptools --no-access-log --port 8001
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp
import orjson

UPSTREAM = os.environ.get("FLOOR_UPSTREAM", "http://127.0.0.1:9000/v1") + "/chat/completions"
HEAD = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
sessions: list[aiohttp.ClientSession] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            connector = aiohttp.TCPConnector(limit=0)  # aiohttp's default caps it at 100
            timeout = aiohttp.ClientTimeout(total=None)
            sessions.append(aiohttp.ClientSession(connector=connector, timeout=timeout))
            await send({"type": "lifespan.startup.complete"})
        await sessions[0].close()
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] != "/api/chat/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    asked = orjson.loads(body)
    upstream_body = {
        "model": asked.get("model", "default").partition("/")[2] or "default",
        "messages": [{"role": "user", "content": asked["message"]}],
        "max_tokens": asked.get("max_tokens"),
        "stream": True,
    }
    headers = {"content-type": "application/json"}
    async with sessions[0].post(UPSTREAM, data=orjson.dumps(upstream_body), headers=headers) as up:
        await send({"type": "http.response.start", "status": 200, "headers": HEAD})
        held = b""
        async for chunk in up.content.iter_any():
            *events, held = (held + chunk).split(b"\n\n")
            out = []
            for event in events:
                if event.startswith(b"data: {"):
                    choices = orjson.loads(event[6:]).get("choices")
                    text = choices[0]["delta"].get("content") if choices else None
                    if text:
                        out.append(b'data: {"type":"token","content":%s}\n\n' % orjson.dumps(text))
            if out:
                await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})
    done = b'data: {"type":"done","finish_reason":"stop"}\n\n'
    await send({"type": "http.response.body", "body": done, "more_body": False})
