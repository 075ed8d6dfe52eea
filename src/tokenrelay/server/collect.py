"""Collect a stream into one answer: the non-streaming endpoints of every dialect use this.

The answer is read by the same subscription engine as an event stream, with an encoder that
keeps the text and the ending instead of rendering them, and a writer that sends nothing.
"""

from __future__ import annotations

from starlette.types import Receive

from tokenrelay.answer import Answer
from tokenrelay.events import Event
from tokenrelay.server.responses import until_disconnect
from tokenrelay.streams.manager import StreamManager
from tokenrelay.streams.subscription import Subscription
from tokenrelay.wire.common import EventEncoder


class _Folding(EventEncoder):
    """Folds each event into an Answer; renders nothing."""

    def __init__(self) -> None:
        self.answer = Answer()

    def encode_one(self, event: Event) -> bytes:
        self.answer.add(event)
        return b""


class _Nowhere:
    """A writer for a subscription with nothing to send (its pings, here)."""

    def write_now(self, data: bytes) -> bool:
        return True

    async def drain(self) -> None:
        return


async def collect_answer(manager: StreamManager, stream_id: str, receive: Receive) -> Answer | None:
    """The whole answer (its text, reasoning, calls and ending); None if the client left.

    The caller counts as a subscriber meanwhile, so a client that leaves a non-streaming
    request cancels the generation just as a streaming one does.
    """
    folding = _Folding()
    settings = manager.settings
    subscription = Subscription(
        manager.log,
        stream_id,
        0,
        folding,
        _Nowhere(),
        keepalive=settings.keepalive,
        send_timeout=settings.send_timeout,
    )
    async with manager.subscription(stream_id):
        if await until_disconnect(receive, subscription.run()) is None:
            return None
    return folding.answer
