"""ASGI middleware: a request id on every request, its response, and its log lines."""

from __future__ import annotations

import logging
import secrets

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokenrelay import logs

logger = logging.getLogger("tokenrelay.http")


def new_request_id() -> str:
    return "req_" + secrets.token_hex(8)


class RequestIdMiddleware:
    """Gives each HTTP request an id (ours, not the caller's: ids must be trustworthy in logs)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        logs.request_id.set(request_id)  # this request's task only; tasks it starts inherit it

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("x-request-id", request_id)
                logger.info(
                    "%s %s %s -> %s", request_id, scope["method"], scope["path"], message["status"]
                )
            await send(message)

        await self.app(scope, receive, send_with_id)
