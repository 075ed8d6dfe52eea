"""What the mock saw of each request: when it began, first wrote, and when its client left;
and the body it was sent, for tests that check what reached the upstream."""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(slots=True)
class Exchange:
    id: int
    path: str
    model: str
    stream: bool
    started_at: float
    first_byte_at: float | None = None
    client_gone_at: float | None = None  # the client closed the connection before the end
    ended_at: float | None = None
    outcome: str = "running"  # completed | client_gone | failed | reset | running
    body: Any = None  # the request body, as decoded JSON


class Recorder:
    def __init__(self) -> None:
        self._exchanges: list[Exchange] = []
        self._ids = itertools.count(1)

    def begin(self, path: str, model: str, stream: bool, body: Any = None) -> Exchange:
        exchange = Exchange(next(self._ids), path, model, stream, time.time(), body=body)
        self._exchanges.append(exchange)
        return exchange

    @staticmethod
    def end(exchange: Exchange, outcome: str) -> None:
        now = time.time()
        exchange.ended_at = now
        exchange.outcome = outcome
        if outcome == "client_gone":
            exchange.client_gone_at = now

    def dump(self, bodies: bool = False) -> list[dict[str, Any]]:
        """Every exchange; their bodies only if asked (a load test's record stays small)."""
        dumped = [asdict(e) for e in self._exchanges]
        if not bodies:
            for exchange in dumped:
                del exchange["body"]
        return dumped

    def clear(self) -> None:
        self._exchanges.clear()
