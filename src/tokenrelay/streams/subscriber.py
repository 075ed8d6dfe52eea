"""Reading a stream from a cursor, in batches: the transport-neutral half of a subscriber.

Each batch is every event available when the subscriber wakes, so a slow reader catches up in
one write instead of one per token (coalescing). An empty batch means nothing arrived for
`keepalive` seconds: the transport sends a keep-alive then.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from tokenrelay.events import Event
from tokenrelay.streams.log import StreamLog


async def batches(
    log: StreamLog, stream_id: str, after: int, *, keepalive: float
) -> AsyncIterator[list[Event]]:
    """Yield batches of events with seq > `after` until the terminal event has been yielded."""
    cursor = after
    while True:
        events = await log.read(stream_id, cursor, wait=keepalive)
        if events:
            yield events
            cursor = events[-1].seq
            if events[-1].terminal:
                return
            continue
        status = await log.status(stream_id)
        if status.ended and cursor >= status.last_seq:
            return  # the reader already had the ending: nothing more will ever come
        yield events
