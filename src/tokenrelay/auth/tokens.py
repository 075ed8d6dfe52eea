"""Short-lived stream tokens, for EventSource, which cannot send an `Authorization` header.

`POST /api/stream-tokens`, with a key, returns a token good for `TOKEN_SECONDS`, which
`GET /api/chat/stream?token=…` and `GET /api/streams/{id}?token=…` accept in place of the key.
A token is bound to its key: it names the key's digest, and it is checked against the key
store when used, so a revoked key's tokens die with it. It is signed (HMAC-SHA256) with a
secret every replica shares through Redis (`tr:streamtokens:secret`, made once), or one of
this process's own without Redis. A token in a URL ends up in browser history and proxy logs:
hence a minute's life. tokenrelay never logs it (request lines carry the path, not the query).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

import orjson

from tokenrelay.errors import StoreUnavailable
from tokenrelay.streams.log_redis import UNAVAILABLE, RedisClient

PREFIX = "trs_"
TOKEN_SECONDS = 60
_SECRET_KEY = "tr:streamtokens:secret"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class StreamTokens:
    def __init__(self, client: RedisClient | None = None) -> None:
        self._redis = client  # the replica's one client (the log's), to share the secret
        self._secret: bytes | None = None if client is not None else secrets.token_bytes(32)

    async def _key(self) -> bytes:
        if self._secret is not None:
            return self._secret
        assert self._redis is not None
        try:
            await self._redis.set(_SECRET_KEY, secrets.token_bytes(32), nx=True)
            stored = await self._redis.get(_SECRET_KEY)
        except UNAVAILABLE:
            raise StoreUnavailable() from None
        if not isinstance(stored, bytes):
            raise StoreUnavailable()
        self._secret = stored
        return stored

    async def issue(self, key_digest: str) -> str:
        payload = _b64(orjson.dumps({"k": key_digest, "e": int(time.time()) + TOKEN_SECONDS}))
        signature = hmac.new(await self._key(), payload.encode(), hashlib.sha256).digest()
        return f"{PREFIX}{payload}.{_b64(signature)}"

    async def key_digest(self, token: str) -> str | None:
        """The digest of the key `token` was issued for, if it is ours and still fresh."""
        if not token.startswith(PREFIX) or len(token) > 512:
            return None
        payload, _, signature = token[len(PREFIX) :].partition(".")
        expected = hmac.new(await self._key(), payload.encode(), hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(_unb64(signature), expected):
                return None
            claims = orjson.loads(_unb64(payload))
        except (ValueError, orjson.JSONDecodeError):
            return None
        if not isinstance(claims, dict) or not isinstance(claims.get("k"), str):
            return None
        if not isinstance(claims.get("e"), int) or claims["e"] < time.time():
            return None
        digest: str = claims["k"]
        return digest
