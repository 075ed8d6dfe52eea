"""Collect a stream into one answer: the non-streaming endpoints of every dialect use this."""

from __future__ import annotations

from typing import Any

from starlette.types import Receive

from tokenrelay.server.responses import until_disconnect
from tokenrelay.streams.manager import StreamManager
from tokenrelay.streams.subscriber import batches


async def _gather(manager: StreamManager, stream_id: str) -> tuple[str, dict[str, Any]]:
    parts: list[str] = []
    ending: dict[str, Any] = {}
    keepalive = manager.settings.keepalive
    async for events in batches(manager.log, stream_id, 0, keepalive=keepalive):
        for event in events:
            if event.type == "token":
                parts.append(event.payload()["content"])
            elif event.terminal:
                ending = event.payload()
    return "".join(parts), ending


async def collect_answer(
    manager: StreamManager, stream_id: str, receive: Receive
) -> tuple[str, dict[str, Any]] | None:
    """The text and the terminal event's payload; None if the client left first.

    The caller counts as a subscriber meanwhile, so a client that leaves a non-streaming
    request cancels the generation just as a streaming one does.
    """
    async with manager.subscription(stream_id):
        return await until_disconnect(receive, _gather(manager, stream_id))
