"""The plain writer: a response body written as ASGI `http.response.body` messages.

Any server, any middleware around `send`: `write_now` holds what it is given and `drain()`
sends it all as one message (`streams.subscription.Writer`). `uvicorn_writer.py` is the one
fast writer, for uvicorn's own `send`; `responses.writer_for` picks between them.
"""

from __future__ import annotations

from starlette.types import Send


class AsgiWriter:
    """Holds what it is given until `drain()` sends it, as one body message, through `send`."""

    __slots__ = ("_held", "_send")

    def __init__(self, send: Send) -> None:
        self._send = send
        self._held: list[bytes] = []

    def write_now(self, data: bytes) -> bool:
        self._held.append(data)
        return False

    async def drain(self) -> None:
        while self._held:  # what is pushed while a send waits goes out in the next one
            held, self._held = self._held, []
            body = held[0] if len(held) == 1 else b"".join(held)
            await self._send({"type": "http.response.body", "body": body, "more_body": True})
