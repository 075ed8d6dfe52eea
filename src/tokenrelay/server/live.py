"""Live delivery: the producer writes a caught-up subscriber's tokens inside its own append.

A subscriber that has sent everything attaches a `LiveWriter` to the log (`StreamLog.attach`)
and its task sleeps. Each token the producer appends is then encoded and written to that
client there and then (`EagerSender`): no future, no task wake-up, no read per token, which was
most of what the log cost over a plain relay (benchmarks/RESULTS.md). Under uvicorn, the token
goes straight to its transport, past the ASGI `send` coroutine (`uvicorn_write.py`). The
writer hands back to the subscriber's task, by returning False from `push` and waking it,
whenever there is something only that task may do:

    the terminal event     the task sends it and closes the response
    a write that waits     the client's socket is full: the task awaits the rest under
                           `send_timeout` (the producer never waits for a client)
    a failed write         the task raises it, as its own send would have
    keep-alive             nothing came for `keepalive` seconds: the task sends a ping
    interrupt              the log is closing

The task then reads the log from `cursor` as usual, and attaches again once caught up.
"""

from __future__ import annotations

import asyncio

from starlette.types import Send

from tokenrelay.events import TERMINAL_TYPES, Event
from tokenrelay.server.eager_send import EagerSender, Suspended
from tokenrelay.server.uvicorn_write import direct_cycle
from tokenrelay.timers import Deadlines
from tokenrelay.wire.common import EventEncoder

_idle_deadlines = Deadlines()  # one loop timer for every sleeping subscriber's keep-alive


class LiveWriter:
    def __init__(self, send: Send, encoder: EventEncoder) -> None:
        self._send_now = EagerSender(send).send_now
        # uvicorn's connection, when a token may be written to its transport directly
        # (uvicorn_write.py); None for any other server or a wrapped `send`.
        self._cycle = direct_cycle(send)
        self._encode = encoder.encode_one
        self.cursor = 0  # the last seq written to the client
        self.pending: Suspended | None = None  # a write the subscriber's task must finish
        self.error: Exception | None = None  # a write that failed
        self.idle = False  # woken by the keep-alive deadline with nothing written
        self._wrote = False
        self._woken = False
        self._wake: asyncio.Future[None] | None = None
        self._keepalive = 0.0

    def start(self, cursor: int) -> None:
        """Begin a round of following from `cursor` (call before attaching)."""
        self.cursor = cursor
        self.idle = self._wrote = self._woken = False

    async def sleep(self, keepalive: float) -> None:
        """Until the writer hands back to the task (see the module docstring)."""
        if self._woken:
            return
        self._wake = asyncio.get_running_loop().create_future()
        self._keepalive = keepalive
        _idle_deadlines.arm(self, keepalive, self._keepalive_due)
        try:
            await self._wake
        finally:
            _idle_deadlines.disarm(self)
            self._wake = None

    def push(self, event: Event) -> bool:
        if event.type in TERMINAL_TYPES:
            self.interrupt()
            return False
        body = self._encode(event)
        if body:  # a dialect may have no form for an event (a status, in OpenAI's)
            cycle = self._cycle
            if cycle is not None and not cycle.flow.write_paused and not cycle.disconnected:
                # What uvicorn's `send` would do here, without its coroutine (uvicorn_write.py).
                cycle.transport.write(b"%x\r\n%s\r\n" % (len(body), body))
            else:
                try:
                    self.pending = self._send_now(
                        {"type": "http.response.body", "body": body, "more_body": True}
                    )
                except Exception as exc:
                    self.error = exc
                    self.interrupt()
                    return False
            self._wrote = True
        self.cursor = event.seq
        if self.pending is not None:
            self.interrupt()
            return False
        return True

    def interrupt(self) -> None:
        self._woken = True
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def take_pending(self) -> Suspended | None:
        pending, self.pending = self.pending, None
        return pending

    def _keepalive_due(self) -> None:
        self.idle = not self._wrote
        if self._wrote:  # tokens are flowing: that is keep-alive enough; sleep on
            self._wrote = False
            _idle_deadlines.arm(self, self._keepalive, self._keepalive_due)
            return
        self.interrupt()
