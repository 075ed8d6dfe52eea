"""Baseline for bench_log: tokenrelay with the log taken out.

The same app (the same direct route past Starlette's stack, validation, provider registry), the
same event payloads, ids and SSE encoder, the same disconnect listener and body `send`, but
`POST /api/chat/stream` writes each token straight to the socket: no producer task, no log, no
subscriber, no cursor. So the difference to tokenrelay is what durable streams cost.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tokenrelay import events as ev
from tokenrelay.providers.base import GenerationRequest, Provider
from tokenrelay.server.app import create_app, tune_gc
from tokenrelay.server.chat_request import read_json_body, validate_chat
from tokenrelay.server.responses import body_send, sse_head, until_disconnect
from tokenrelay.server.state import AppState, request_id_of
from tokenrelay.streams.manager import new_stream_id
from tokenrelay.wire.native import NativeEncoder


class DirectRelay(Response):
    def __init__(self, provider: Provider, request: GenerationRequest, model: str) -> None:
        super().__init__(content=None, media_type="text/event-stream")
        self.provider, self.request, self.model = provider, request, model
        self.stream_id = new_stream_id()
        self.raw_headers = sse_head(self.stream_id)  # the same head as tokenrelay's
        self.encoder = NativeEncoder(self.stream_id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await until_disconnect(receive, self._relay(send, body_send(scope, send)))

    async def _relay(self, send: Send, send_body: Send) -> None:
        """Like EventStreamResponse: the start through the middleware, the body past it."""
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        send = send_body
        seq = 1
        await self._send(send, ev.start_event(seq, self.stream_id, self.model), more=True)
        finish = "stop"
        async for delta in self.provider.stream(self.request):
            if delta.text:
                seq += 1
                await self._send(send, ev.token_event(seq, delta.text), more=True)
            finish = delta.finish_reason or finish
        done = ev.make_event(seq + 1, "done", finish_reason=finish, token_count=seq - 1)
        await self._send(send, done, more=False)

    async def _send(self, send: Send, event: ev.Event, *, more: bool) -> None:
        body = self.encoder.encode_one(event)
        await send({"type": "http.response.body", "body": body, "more_body": more})


async def direct_stream(request: Request) -> Response:
    state: AppState = request.app.state.tokenrelay
    data = await read_json_body(request, state.settings.server.max_body_bytes)
    chat = validate_chat(data, strict=True, max_tokens_limit=state.settings.server.max_tokens_limit)
    provider, model, canonical = state.registry.resolve(chat.model or state.default_model)
    return DirectRelay(provider, chat.to_generation(model, request_id_of(request)), canonical)


app = create_app()
# Served the way tokenrelay serves its own (direct.py), ahead of tokenrelay's own route.
app.direct_routes.insert(0, Route("/api/chat/stream", direct_stream, methods=["POST"]))
tune_gc()  # the same process settings as `tokenrelay serve` (server/app.py serve_app)
