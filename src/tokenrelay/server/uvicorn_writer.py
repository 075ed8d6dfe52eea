"""The fast writer: live tokens written straight to uvicorn's transport, past its ASGI `send`.

For a body chunk of a chunked response, uvicorn's httptools `send` checks the socket is not
full and the client is still there, frames the chunk and calls `transport.write`. A live token
needs only that, and the `send` coroutine around it is the largest cost left on its path
(docs/performance.md). `UvicornWriter.write_now` does those checks and that write itself;
whatever it cannot write at once (a full socket, a client gone) it holds, and `drain()` sends
through the real `send`, which waits for the socket exactly as uvicorn does.

This reads uvicorn's per-request state (`RequestResponseCycle`: `transport`, `flow`,
`disconnected`, `chunked_encoding`, `response_complete`), which is not public API. So:
- `available()` checks, once per process, that the class still has that state (it builds one,
  as uvicorn does); if not, every response takes the ASGI writer;
- `cycle_of(send)` answers only for that exact class's own `send`, on a chunked response;
- uvicorn is pinned in pyproject.toml to the releases `tests/server/test_uvicorn_writer.py`
  has run against; that test fails if a release changes what this relies on.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from starlette.types import Send

from tokenrelay.server.asgi_writer import AsgiWriter

logger = logging.getLogger("tokenrelay.http")

try:
    from uvicorn.protocols.http.flow_control import FlowControl
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
except ImportError:  # uvicorn without httptools: nothing to write past
    RequestResponseCycle = None  # type: ignore[assignment,misc]

_STATE = ("transport", "flow", "disconnected", "chunked_encoding", "response_complete")


@functools.cache
def available() -> bool:
    """Whether uvicorn's cycle still has the state the writer reads (checked once)."""
    if RequestResponseCycle is None:
        return False
    try:
        cycle = RequestResponseCycle(  # as httptools_impl builds one; nothing is sent
            scope={"type": "http", "method": "GET"},  # type: ignore[typeddict-item]
            transport=None,  # type: ignore[arg-type]
            flow=FlowControl(None),  # type: ignore[arg-type]
            logger=logger,
            access_logger=logger,
            access_log=False,
            default_headers=[],
            message_event=None,  # type: ignore[arg-type]
            expect_100_continue=False,
            keep_alive=True,
            on_response=lambda: None,
        )
    except TypeError:
        return False
    if not all(hasattr(cycle, name) for name in _STATE) or not hasattr(cycle.flow, "write_paused"):
        return False
    return callable(getattr(cycle, "send", None))


def cycle_of(send: Send) -> Any:
    """uvicorn's cycle behind `send`, if tokens may be written past it: `send` is the httptools
    cycle's own, on a response that started chunked and is not complete; else None."""
    cycle = getattr(send, "__self__", None)
    if RequestResponseCycle is None or type(cycle) is not RequestResponseCycle or not available():
        return None
    if cycle.chunked_encoding is not True or cycle.response_complete:
        return None
    return cycle


class UvicornWriter(AsgiWriter):
    """Writes to uvicorn's transport while it can; holds the rest for `drain()` (`send`)."""

    __slots__ = ("_cycle",)

    def __init__(self, send: Send, cycle: Any) -> None:
        super().__init__(send)
        self._cycle = cycle

    def write_now(self, data: bytes) -> bool:
        cycle = self._cycle
        if self._held or cycle.flow.write_paused or cycle.disconnected:
            self._held.append(data)
            return False
        cycle.transport.write(b"%x\r\n%s\r\n" % (len(data), data))  # uvicorn's chunk framing
        return True

    def abort(self) -> None:
        """uvicorn would `close()` the transport when the app returns, which waits to flush
        megabytes the client is not reading, and log the response as incomplete. A dropped
        client is expected: abort (the socket and its buffer go now), marked as a disconnect."""
        self._cycle.disconnected = True
        self._cycle.transport.abort()
