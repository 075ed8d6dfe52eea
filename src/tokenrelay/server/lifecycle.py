"""Shutdown signals reach the app, so open streams end with a terminal event before exit.

uvicorn, on SIGTERM, stops accepting connections and then waits for open responses to finish
before it runs the lifespan shutdown. A stream that is still generating would hold it there,
and its client would see the connection drop without an ending. So the app chains its own
handler in front of uvicorn's (in every worker: uvicorn's workers run a plain `Server`, so a
`Server` subclass would not see the signal), and starts draining the moment the signal lands.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def chain_shutdown_signals(on_signal: Callable[[], None]) -> Callable[[], None]:
    """Call `on_signal` in the event loop on SIGTERM/SIGINT, then the previous handler.

    Returns a function that puts the previous handlers back. Does nothing off the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(on_signal)
        before = previous.get(signum)
        if callable(before):
            before(signum, frame)
        elif before == signal.SIG_DFL:  # nobody else handles it: let it do what it always does
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    for sig in _SIGNALS:
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, before in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, before)

    return restore
