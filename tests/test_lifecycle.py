"""The shutdown signal's drain runs in a context of its own: a signal interrupts whatever runs,
a request's task included, and the drain's log lines must not carry that request's id."""

from __future__ import annotations

import asyncio
import os
import signal

from tokenrelay import logs
from tokenrelay.server.lifecycle import chain_shutdown_signals


async def _drain_seen_from_a_request() -> tuple[str, str]:
    seen: dict[str, str] = {}
    done = asyncio.Event()

    async def drain() -> None:
        seen["drain"] = logs.request_id.get()
        done.set()

    restore = chain_shutdown_signals(drain, lambda: None)
    try:

        async def request() -> None:
            logs.request_id.set("req_interrupted")
            seen["request"] = logs.request_id.get()
            os.kill(os.getpid(), signal.SIGTERM)  # handled now, inside this task's context
            await asyncio.sleep(0)

        await asyncio.create_task(request())
        await asyncio.wait_for(done.wait(), 5)
    finally:
        restore()
    return seen["request"], seen["drain"]


def test_the_drain_does_not_run_in_the_interrupted_requests_context() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: None)  # uvicorn's, which the drain passes it on to
    try:
        request, drain = asyncio.run(_drain_seen_from_a_request())
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert request == "req_interrupted"
    assert drain == ""
