"""Per-key limits: streams at once, requests a minute, output tokens a minute.

A limit is checked when a request is admitted; a stream that crosses one part-way finishes
normally. Minutes are sliding windows (the last 60 s), not calendar minutes, so there is no
burst at a minute's turn.

Slots (streams at once) are the part other gateways leak (a cancelled or cut stream that
never gives its slot back, until the key is blocked for good). Here a slot is held by a
stream id and given back by the stream manager when the stream's task ends, whatever ended
it: that runs exactly once per stream (`StreamManager._finished`). With Redis, a slot also
carries an expiry that the producing replica renews with its leases, so a replica killed
with `kill -9` gives its slots back when its lease would have lapsed.

- **One process** (`MemoryLimiter`): plain dictionaries.
- **Redis** (`RedisLimiter`): one Lua script admits atomically across every replica. Per key
  it keeps a sorted set of slots (stream id, expiry), a sorted set of requests (stream id,
  time) and a hash of output tokens by second. Tokens are counted as they stream: the
  manager reports each key's new tokens once a second.
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass

from tokenrelay.auth.keys import ApiKey
from tokenrelay.errors import KeyOverLimit, StoreUnavailable
from tokenrelay.streams.log_redis import UNAVAILABLE, RedisClient

WINDOW = 60.0  # seconds


@dataclass(frozen=True, slots=True)
class Refusal:
    limit: str  # "concurrent", "requests" or "tokens"
    retry_after: float
    remaining_requests: int | None
    remaining_tokens: int | None
    reset_requests: float  # seconds until a request is free again
    reset_tokens: float


def refuse(key: ApiKey, refusal: Refusal) -> KeyOverLimit:
    limits = key.limits
    return KeyOverLimit(
        refusal.limit,
        retry_after=refusal.retry_after,
        limit_requests=limits.requests_per_minute,
        remaining_requests=refusal.remaining_requests,
        reset_requests=refusal.reset_requests,
        limit_tokens=limits.tokens_per_minute,
        remaining_tokens=refusal.remaining_tokens,
        reset_tokens=refusal.reset_tokens,
    )


class Limiter(ABC):
    @abstractmethod
    async def admit(self, key: ApiKey, stream_id: str) -> None:
        """Take a slot and a request for `stream_id`, or raise KeyOverLimit."""

    @abstractmethod
    async def release(self, key_name: str, stream_id: str) -> None:
        """Give the slot back (at most once per stream; a second call does nothing)."""

    @abstractmethod
    async def count_tokens(self, counts: dict[str, int]) -> None:
        """Output tokens streamed since the last call, by key name."""

    async def renew(self, held: dict[str, str]) -> None:  # noqa: B027 - one process: nothing
        """Keep the slots of streams still running here (stream id -> key name)."""


class MemoryLimiter(Limiter):
    def __init__(self) -> None:
        self._slots: dict[str, set[str]] = {}
        self._requests: dict[str, deque[float]] = {}
        self._tokens: dict[str, deque[tuple[float, int]]] = {}

    def slots_held(self) -> int:
        return sum(map(len, self._slots.values()))

    async def admit(self, key: ApiKey, stream_id: str) -> None:
        now = time.monotonic()
        limits = key.limits
        requests = self._requests.setdefault(key.name, deque())
        while requests and requests[0] <= now - WINDOW:
            requests.popleft()
        tokens = self._tokens.setdefault(key.name, deque())
        while tokens and tokens[0][0] <= now - WINDOW:
            tokens.popleft()
        used_tokens = sum(n for _, n in tokens)
        slots = self._slots.setdefault(key.name, set())
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        left_requests = None if rpm is None else rpm - len(requests)
        left_tokens = None if tpm is None else max(0, tpm - used_tokens)
        reset_requests = requests[0] + WINDOW - now if requests else 0.0
        reset_tokens = tokens[0][0] + WINDOW - now if tokens else 0.0
        refused = None
        if limits.max_concurrent is not None and len(slots) >= limits.max_concurrent:
            refused = Refusal("concurrent", 1.0, left_requests, left_tokens, 0.0, 0.0)
        elif left_requests is not None and left_requests <= 0:
            refused = Refusal(
                "requests", reset_requests, 0, left_tokens, reset_requests, reset_tokens
            )
        elif tpm is not None and used_tokens >= tpm:
            refused = Refusal(
                "tokens", reset_tokens, left_requests, 0, reset_requests, reset_tokens
            )
        if refused is not None:
            raise refuse(key, refused)
        slots.add(stream_id)
        requests.append(now)

    async def release(self, key_name: str, stream_id: str) -> None:
        slots = self._slots.get(key_name)
        if slots is not None:
            slots.discard(stream_id)

    async def count_tokens(self, counts: dict[str, int]) -> None:
        now = time.monotonic()
        for name, n in counts.items():
            if n:
                self._tokens.setdefault(name, deque()).append((now, n))


# KEYS: slots, requests, tokens. ARGV: stream id, max concurrent, rpm, tpm (0: none), slot
# lease (ms). Returns {admitted (1/0), refused limit, retry after (ms), requests left (-1:
# none), tokens left (-1: none), requests reset (ms), tokens reset (ms)}.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = 60000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
local used, oldest_token = 0, nil
local buckets = redis.call('HGETALL', KEYS[3])
for i = 1, #buckets, 2 do
  local second = tonumber(buckets[i])
  if second * 1000 <= now - window then
    redis.call('HDEL', KEYS[3], buckets[i])
  else
    used = used + tonumber(buckets[i + 1])
    if oldest_token == nil or second < oldest_token then oldest_token = second end
  end
end
local max_c, rpm, tpm = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local requests = redis.call('ZCARD', KEYS[2])
local left_r, left_t = -1, -1
if rpm > 0 then left_r = rpm - requests end
if tpm > 0 then left_t = math.max(0, tpm - used) end
local reset_r, reset_t = 0, 0
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if #first > 0 then reset_r = tonumber(first[2]) + window - now end
if oldest_token ~= nil then reset_t = oldest_token * 1000 + window - now end
if max_c > 0 and redis.call('ZCARD', KEYS[1]) >= max_c then
  return {0, 'concurrent', 1000, left_r, left_t, 0, 0}
end
if rpm > 0 and left_r <= 0 then return {0, 'requests', reset_r, 0, left_t, reset_r, reset_t} end
if tpm > 0 and used >= tpm then return {0, 'tokens', reset_t, left_r, 0, reset_r, reset_t} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]), ARGV[1])
redis.call('ZADD', KEYS[2], now, ARGV[1])
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], window * 2 + tonumber(ARGV[5])) end
return {1, '', 0, left_r, left_t, reset_r, reset_t}
"""

# KEYS: slots. ARGV: lease (ms), stream ids. Pushes back the expiry of slots still held,
# and of the set itself (a stream may outlive admission's expiry by far); a slot lost to an
# outage is put back.
_RENEW = """
local t = redis.call('TIME')
local until_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], until_ms, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], 120000 + tonumber(ARGV[1]))
"""

# KEYS: tokens. ARGV: count. Adds to this second's bucket.
_COUNT = """
local t = redis.call('TIME')
redis.call('HINCRBY', KEYS[1], t[1], tonumber(ARGV[1]))
redis.call('PEXPIRE', KEYS[1], 120000)
"""


def _keys(name: str) -> list[str]:
    base = f"tr:lim:{{{name}}}"
    return [f"{base}:slots", f"{base}:requests", f"{base}:tokens"]


def _left(value: int) -> int | None:
    return None if value < 0 else value


class RedisLimiter(Limiter):
    def __init__(self, client: RedisClient, lease: float) -> None:
        self.redis = client  # the replica's one client (the log's)
        self.lease_ms = int(lease * 1000)
        self._admit = self.redis.register_script(_ADMIT)
        self._count = self.redis.register_script(_COUNT)
        self._renew = self.redis.register_script(_RENEW)

    async def admit(self, key: ApiKey, stream_id: str) -> None:
        limits = key.limits
        args: list[str | int] = [
            stream_id,
            limits.max_concurrent or 0,
            limits.requests_per_minute or 0,
            limits.tokens_per_minute or 0,
            self.lease_ms,
        ]
        try:
            reply = await self._admit(keys=_keys(key.name), args=args)
        except UNAVAILABLE:
            raise StoreUnavailable() from None
        admitted, limit, retry_ms, left_r, left_t, reset_r, reset_t = reply
        if not admitted:
            which = limit.decode() if isinstance(limit, bytes) else str(limit)
            refusal = Refusal(
                which, retry_ms / 1000, _left(left_r), _left(left_t), reset_r / 1000, reset_t / 1000
            )
            raise refuse(key, refusal)

    async def release(self, key_name: str, stream_id: str) -> None:
        with contextlib.suppress(*UNAVAILABLE):  # else it expires
            await self.redis.zrem(_keys(key_name)[0], stream_id)

    async def count_tokens(self, counts: dict[str, int]) -> None:
        try:
            for name, n in counts.items():
                if n:
                    await self._count(keys=[_keys(name)[2]], args=[n])
        except UNAVAILABLE:
            pass  # tokens uncounted for a second of an outage: limits run a little loose

    async def renew(self, held: dict[str, str]) -> None:
        if not held:
            return
        by_key: dict[str, list[str]] = {}
        for stream_id, name in held.items():
            by_key.setdefault(name, []).append(stream_id)
        try:
            for name, stream_ids in by_key.items():
                await self._renew(keys=[_keys(name)[0]], args=[self.lease_ms, *stream_ids])
        except UNAVAILABLE:
            pass  # the log's outage handling ends these streams; their slots then expire


def limiter_for(client: RedisClient | None, lease: float) -> Limiter:
    return RedisLimiter(client, lease) if client is not None else MemoryLimiter()
