"""An ASGI `send` run in the caller's own step, finished by another task if it has to wait.

The producer writes a live token straight to a caught-up subscriber's socket (`live.py`): one
task step per token instead of two (the producer's, then the subscriber's). `send` is a
coroutine, but a server's send of a body chunk almost never waits: uvicorn and hypercorn hand
the bytes to the transport and return, and wait only while the client's socket is full. So an
`EagerSender` steps the coroutine by hand. If it finishes there, the write is done. If it waits
(a full socket, a middleware that yields), what is left comes back as a `Suspended`, which the
subscriber's task awaits under `send_timeout`: the producer never waits for a client.
(Python 3.12's eager tasks do the same for whole tasks; we support 3.11.)

The coroutines run inside one long-lived generator (`yield from`), so a finished write hands
back a marker instead of raising StopIteration: stepping a coroutine to its end from Python
costs an exception per token otherwise, a tenth of the whole per-token budget (py-spy).
"""

from __future__ import annotations

import types
from collections.abc import Generator
from typing import Any

from starlette.types import Message, Send

_SENT = object()  # what the driver yields when a write has finished


@types.coroutine  # lets a generator `yield from` a coroutine, with no wrapper in between
def _drive(send: Send) -> Generator[Any, Any, None]:
    """Send each message it is given; yields _SENT after each, or what the send waits on."""
    message = yield _SENT
    while True:
        yield from send(message)  # type: ignore[misc]  # allowed by @types.coroutine
        message = yield _SENT


class Suspended:
    """A write that had to wait; awaiting this finishes it (in the awaiting task).

    That task takes over the wait exactly as if it had started the write itself: its wake-ups
    are sent in and its interruptions (a cancel: send_timeout, client gone) thrown in.
    """

    __slots__ = ("_driver", "_waiting_on")

    def __init__(self, driver: Generator[Any, Any, None], waiting_on: Any) -> None:
        self._driver = driver
        self._waiting_on = waiting_on

    def __await__(self) -> Generator[Any, None, None]:
        driver, waiting_on = self._driver, self._waiting_on
        while waiting_on is not _SENT:
            try:
                yield waiting_on
            except BaseException as exc:
                waiting_on = driver.throw(exc)
            else:
                waiting_on = driver.send(None)

    def close(self) -> None:
        """Abandon the write (its subscriber is gone): the coroutine's cleanup runs now."""
        self._driver.close()


class EagerSender:
    """Sends messages through one ASGI `send`, starting each write in the caller's own step.

    After a `Suspended` write, the next `send_now` must wait until it has been awaited (or
    closed): writes to one client never overlap.
    """

    __slots__ = ("_driver",)

    def __init__(self, send: Send) -> None:
        self._driver = _drive(send)
        next(self._driver)

    def send_now(self, message: Message) -> Suspended | None:
        """None if the write finished at once, else what is left to await.

        An exception raised by the write propagates to the caller, and ends this sender.
        """
        waiting_on = self._driver.send(message)
        if waiting_on is _SENT:
            return None
        return Suspended(self._driver, waiting_on)
