"""Collect a stream into one answer: the non-streaming endpoints of every dialect use this.

The answer is read by the same subscription engine as an event stream, with an encoder that
keeps the text and the ending instead of rendering them, and a writer that sends nothing.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Receive

from tokenrelay.events import Event
from tokenrelay.server.responses import until_disconnect
from tokenrelay.streams.manager import StreamManager
from tokenrelay.streams.subscription import Subscription
from tokenrelay.wire.common import EventEncoder


class _Answer(EventEncoder):
    """Keeps the tokens' text and the terminal event's payload; renders nothing."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.ending: dict[str, Any] = {}

    def encode_one(self, event: Event) -> bytes:
        if event.type == "token":
            self.parts.append(event.payload()["content"])
        elif event.terminal:
            self.ending = event.payload()
        return b""


class _Nowhere:
    """A writer for a subscription with nothing to send (its pings, here)."""

    def write_now(self, data: bytes) -> bool:
        return True

    async def drain(self) -> None:
        return


async def collect_answer(
    manager: StreamManager, stream_id: str, receive: Receive
) -> tuple[str, dict[str, Any]] | None:
    """The text and the terminal event's payload; None if the client left first.

    The caller counts as a subscriber meanwhile, so a client that leaves a non-streaming
    request cancels the generation just as a streaming one does.
    """
    answer = _Answer()
    settings = manager.settings
    subscription = Subscription(
        manager.log,
        stream_id,
        0,
        answer,
        _Nowhere(),
        keepalive=settings.keepalive,
        send_timeout=settings.send_timeout,
    )
    async with manager.subscription(stream_id):
        if await until_disconnect(receive, subscription.run()) is None:
            return None
    return "".join(answer.parts), answer.ending
