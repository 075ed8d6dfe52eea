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

    def abort(self) -> None:
        """Cut the connection to a client that was dropped, without flushing what it did not
        read. ASGI has no such message: the server closes it once the app returns."""

    async def drain(self) -> None:
        held = self._held
        while held:  # what is written while a send waits goes out in the next one
            count = len(held)
            body = held[0] if count == 1 else b"".join(held[:count])
            await self._send({"type": "http.response.body", "body": body, "more_body": True})
            # Held until sent: a writer that writes at once (UvicornWriter) sees them held
            # meanwhile, and holds what comes next behind them rather than overtaking them.
            del held[:count]
