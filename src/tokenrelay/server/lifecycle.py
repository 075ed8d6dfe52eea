"""Shutdown signals reach the app first, so open streams end with a terminal event, and new
requests meanwhile get the documented 503, not "connection refused".

uvicorn, on SIGTERM, closes its listener at once, then waits for open responses before it
runs the lifespan shutdown. A stream still generating would hold it there, its client would
see the connection drop without an ending, and a load balancer's health check and every new
request would meet a closed port rather than `/healthz` saying "draining". So the app chains
its own handler in front of uvicorn's (in every worker: uvicorn's workers run a plain
`Server`, so a `Server` subclass would not see the signal). On the signal it drains: new
streams are refused with 503 while the listener stays open, and open streams finish, or are
cancelled at `drain_timeout` with a `server_shutdown` ending. Only then does it hand the
signal to uvicorn, which closes the listener and the idle connections and exits.

A second signal while draining ends the streams still running at once (each with its
`server_shutdown` ending) and goes to uvicorn: the operator means it.

Which process is "the server" (`/healthz` says, for `tokenrelay bench --server-pid auto`): the
one `tokenrelay serve` runs in. With `--workers N` a worker answers the request, but the process
to signal and to measure is the supervisor, whose children the workers are; `serve` names itself
to them in the environment.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
SERVER_PID_ENV = "TOKENRELAY_SERVER_PID"  # set by `tokenrelay serve`, inherited by workers
logger = logging.getLogger("tokenrelay.lifecycle")


def server_pid() -> int:
    """The `tokenrelay serve` process: this one, or the supervisor of this worker."""
    return supervisor_pid() or os.getpid()


def supervisor_pid() -> int | None:
    """The `tokenrelay serve` that started this worker (alive or not), or None if this is not
    one of its workers. Asked of multiprocessing, which spawned it: the parent's pid stays
    known after the parent is gone, as `getppid()` does not. A value of SERVER_PID_ENV
    inherited from further up (a server that started another) names no parent, and is
    ignored."""
    parent = multiprocessing.parent_process()
    named = os.environ.get(SERVER_PID_ENV, "")
    if parent is not None and named.isdigit() and int(named) == parent.pid:
        return parent.pid
    return None


async def exit_with_the_supervisor(supervisor: int, every: float = 1.0) -> None:
    """A worker whose supervisor died (kill -9, a crash) would go on serving the port with
    nothing left to stop or restart it, and be found only by its held port. It shuts down as
    a SIGTERM has it: open streams drain first."""
    while True:
        await asyncio.sleep(every)
        if os.getppid() != supervisor:
            logger.error("the supervisor (pid %d) is gone: this worker shuts down", supervisor)
            os.kill(os.getpid(), signal.SIGTERM)
            return


def chain_shutdown_signals(
    drain: Callable[[], Coroutine[Any, Any, None]], hurry: Callable[[], None]
) -> Callable[[], None]:
    """On SIGTERM/SIGINT, run `drain()` in the event loop, then the previous handler. On a
    second signal, `hurry()` (end what still runs, now) and the previous handler at once.

    Returns a function that puts the previous handlers back. Does nothing off the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}
    draining: set[asyncio.Task[None]] = set()  # the drain under way, kept referenced
    signalled = passed_on = False

    def pass_on(signum: int, frame: FrameType | None) -> None:
        nonlocal passed_on
        passed_on = True
        before = previous.get(signum)
        if callable(before):
            before(signum, frame)
        elif before == signal.SIG_DFL:  # nobody else handles it: let it do what it always does
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    async def drain_then_pass_on(signum: int) -> None:
        try:
            await drain()
        except Exception:
            logger.exception("draining failed; shutting down")
        finally:
            if not passed_on:  # a second signal has already passed it on
                pass_on(signum, None)

    def start_draining(signum: int) -> None:
        draining.add(loop.create_task(drain_then_pass_on(signum)))

    def handler(signum: int, frame: FrameType | None) -> None:
        # A signal interrupts whatever runs, a request's task included: the drain gets a
        # context of its own, or its log lines would carry that request's id.
        nonlocal signalled
        if signalled:
            loop.call_soon_threadsafe(hurry, context=contextvars.Context())
            pass_on(signum, frame)
        else:
            signalled = True
            loop.call_soon_threadsafe(start_draining, signum, context=contextvars.Context())

    for sig in _SIGNALS:
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, before in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, before)

    return restore
