"""Baseline for bench_log: sim tokens straight into the SSE encoder, no Stream, no log.

The same provider, the same event payloads and the same encoder as tokenrelay, minus
everything that makes streams durable (producer task, log, subscriber, cursor): the
difference is what the log costs.
"""

from __future__ import annotations

import orjson
from starlette.types import Receive, Scope, Send

from tokenrelay import events as ev
from tokenrelay.providers.base import GenerationRequest, Message
from tokenrelay.providers.sim import SimProvider
from tokenrelay.sse import encode_json_event

_sim = SimProvider()


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/healthz":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    data = orjson.loads(body)
    model = str(data.get("model", "sim/fast")).removeprefix("sim/")
    request = GenerationRequest(
        model, (Message("user", data["message"]),), max_tokens=data.get("max_tokens")
    )
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    seq = 1
    await send(
        {
            "type": "http.response.body",
            "more_body": True,
            "body": encode_json_event(f"s:{seq}", ev.start_event(seq, "s", "sim/fast").data),
        }
    )
    async for delta in _sim.stream(request):
        if delta.text:
            seq += 1
            payload = ev.token_event(seq, delta.text).data
            await send(
                {
                    "type": "http.response.body",
                    "body": encode_json_event(f"s:{seq}", payload),
                    "more_body": True,
                }
            )
    done = ev.make_event(seq + 1, "done", finish_reason="length", token_count=seq - 1).data
    await send(
        {
            "type": "http.response.body",
            "body": encode_json_event(f"s:{seq + 1}", done),
            "more_body": False,
        }
    )
