"""What each key used: for `GET /api/usage` (the caller's own last 24 hours, by model) and for
Prometheus (by key name, never by key).

A stream's usage is recorded once, when it ends, with the figures its terminal event carries
(the upstream's, or ours where it said nothing: `usage.estimated` names those). Kept by hour:
in memory without Redis, else in Redis, a hash per key and hour that expires after a day, so
that every replica's answers add up.
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from typing import Any

from tokenrelay.errors import StoreUnavailable
from tokenrelay.streams.log_redis import UNAVAILABLE, RedisClient

KINDS = ("requests", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")
HOUR = 3600
DAY_HOURS = 24


def figures(usage: dict[str, Any]) -> dict[str, int]:
    """One stream's counts, from its terminal event's `usage`."""
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return {
        "requests": 1,
        "input_tokens": int(usage.get("prompt_tokens") or 0),
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "cached_tokens": int(prompt_details.get("cached_tokens") or 0),
        "reasoning_tokens": int(completion_details.get("reasoning_tokens") or 0),
    }


class UsageBook(ABC):
    @abstractmethod
    async def record(self, key_name: str, model: str, counts: dict[str, int]) -> None: ...

    @abstractmethod
    async def last_day(self, key_name: str) -> dict[str, dict[str, int]]:
        """The last 24 hours (whole hours), by model."""


def _hour(now: float) -> int:
    return int(now // HOUR)


def _add(into: dict[str, dict[str, int]], model: str, counts: dict[str, int]) -> None:
    row = into.setdefault(model, dict.fromkeys(KINDS, 0))
    for kind, n in counts.items():
        row[kind] = row.get(kind, 0) + n


class MemoryUsageBook(UsageBook):
    def __init__(self) -> None:
        self._hours: dict[tuple[str, int], dict[str, dict[str, int]]] = {}

    async def record(self, key_name: str, model: str, counts: dict[str, int]) -> None:
        hour = _hour(time.time())
        _add(self._hours.setdefault((key_name, hour), {}), model, counts)
        for stale in [k for k in self._hours if k[1] <= hour - DAY_HOURS]:
            del self._hours[stale]

    async def last_day(self, key_name: str) -> dict[str, dict[str, int]]:
        hour = _hour(time.time())
        total: dict[str, dict[str, int]] = {}
        for (name, at), models in self._hours.items():
            if name == key_name and at > hour - DAY_HOURS:
                for model, counts in models.items():
                    _add(total, model, counts)
        return total


class RedisUsageBook(UsageBook):
    def __init__(self, client: RedisClient) -> None:
        self.redis = client  # the replica's one client (the log's)

    @staticmethod
    def _key(key_name: str, hour: int) -> str:
        return f"tr:usage:{{{key_name}}}:{hour}"

    async def record(self, key_name: str, model: str, counts: dict[str, int]) -> None:
        key = self._key(key_name, _hour(time.time()))
        with contextlib.suppress(*UNAVAILABLE):  # bookkeeping only
            async with self.redis.pipeline(transaction=False) as pipe:
                for kind, n in counts.items():
                    if n:
                        pipe.hincrby(key, f"{model}\n{kind}", n)
                pipe.expire(key, (DAY_HOURS + 1) * HOUR)
                await pipe.execute()

    async def last_day(self, key_name: str) -> dict[str, dict[str, int]]:
        hour = _hour(time.time())
        total: dict[str, dict[str, int]] = {}
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for at in range(hour - DAY_HOURS + 1, hour + 1):
                    pipe.hgetall(self._key(key_name, at))
                hours = await pipe.execute()
        except UNAVAILABLE:
            raise StoreUnavailable() from None
        for fields in hours:
            for field, value in fields.items():
                model, _, kind = field.decode().rpartition("\n")
                _add(total, model, {kind: int(value)})
        return total


def usage_book_for(client: RedisClient | None) -> UsageBook:
    return RedisUsageBook(client) if client is not None else MemoryUsageBook()
