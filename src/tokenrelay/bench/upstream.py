"""Did each cancel reach the upstream? Asked of `tokenrelay mock-upstream`'s own record.

Each request's model carries a unique `+tag-<hex>` (the mock accepts and records it), so the
record says, per request, whether its client (the gateway under test) closed the connection
before the end, and when. The lag is that moment minus the load tester's abort, both from the
wall clock of this one machine.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tokenrelay.bench.request import Result
from tokenrelay.bench.stats import distribution

SETTLE_SECONDS = 5.0  # how long a cancel may take to show before it counts as not seen


async def verify_cancels(upstream: str, results: list[Result]) -> dict[str, Any]:
    cancelled = {r.tag: r for r in results if r.cancelled_at is not None and r.tag}
    if not cancelled:
        return {}
    deadline = time.monotonic() + SETTLE_SECONDS
    async with httpx.AsyncClient(base_url=upstream, timeout=10) as client:
        while True:
            exchanges = _by_tag((await client.get("/_mock/requests")).json())
            pending = [t for t in cancelled if exchanges.get(t, {}).get("outcome") == "running"]
            if not pending or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    lags, outcomes = [], {"reached_upstream": 0, "upstream_finished_first": 0, "not_seen": 0}
    for tag, result in cancelled.items():
        exchange = exchanges.get(tag)
        outcome = exchange.get("outcome") if exchange else None
        gone_at = exchange.get("client_gone_at") if exchange else None
        if outcome == "client_gone" and isinstance(gone_at, float):
            outcomes["reached_upstream"] += 1
            assert result.cancelled_at is not None
            lags.append(max(0.0, gone_at - result.cancelled_at))
        elif outcome == "completed":
            outcomes["upstream_finished_first"] += 1
        else:
            outcomes["not_seen"] += 1
    return {**outcomes, "upstream_close_lag_ms": distribution(lags)}


def _by_tag(record: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    tagged = {}
    for exchange in record:
        _, found, tag = str(exchange.get("model", "")).rpartition("+tag-")
        if found:
            tagged[tag.partition("+")[0]] = exchange
    return tagged
