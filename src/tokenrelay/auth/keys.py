"""tokenrelay's own API keys: made once, kept hashed, looked up per request.

A key is `tr-` and 32 random bytes (URL-safe base64). Only its SHA-256 is kept: the key is
random, so a slow hash would add nothing a brute force could notice, and the lookup is by
digest then confirmed with a constant-time comparison. The key itself is shown once, by
`tokenrelay keys create`, and never written to a file, a log or a response.

Where keys live:
- **Redis**, when it is configured: `tr:{keys}:records` maps a digest to the key's record
  (JSON), and `tr:{keys}:names` a name to its digest. Every replica reads them on each request, so a
  revocation holds everywhere at once.
- **A keys file** otherwise (`[auth] keys_file`, or `TOKENRELAY_KEYS_FILE`): JSON, written
  whole to a temporary file and renamed (mode 0600), and read again whenever it changes.

`last_used` is kept to the minute: writing it on every request would make every request a
write.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import fnmatch
import hashlib
import hmac
import os
import re
import secrets
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from tokenrelay.errors import StoreUnavailable
from tokenrelay.streams.log_redis import UNAVAILABLE, RedisClient

PREFIX = "tr-"
LAST_USED_EVERY = 60.0  # seconds: how fresh `last_used` is kept
# One hash tag ({keys}), so that a revoke's transaction works on a Redis Cluster too.
_KEYS, _NAMES, _USED = "tr:{keys}:records", "tr:{keys}:names", "tr:{keys}:used"
# Where keys made before the hash tag live: copied over on first use (`_carry_over`). Left
# behind, they would be missed, and a deployment whose keys all lived there would stop
# requiring keys. The old hashes stay, so that replicas of the earlier release, still running
# in a rolling upgrade, go on finding them; a revoke removes a key from both.
_BEFORE = {"tr:keys": _KEYS, "tr:keynames": _NAMES, "tr:keyused": _USED}


@dataclass(frozen=True, slots=True)
class KeyLimits:
    max_concurrent: int | None = None  # streams at once
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None  # output tokens, counted as they stream


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    digest: str  # SHA-256 of the key, hex
    created_at: float
    limits: KeyLimits = field(default_factory=KeyLimits)
    models: tuple[str, ...] = ()  # globs ("sim/*"); empty: every model
    expires_at: float | None = None
    last_used: float | None = None

    def allows(self, model: str) -> bool:
        return not self.models or any(fnmatch.fnmatchcase(model, glob) for glob in self.models)

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def record(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def of(cls, raw: bytes | str) -> ApiKey:
        data: dict[str, Any] = orjson.loads(raw)
        data["limits"] = KeyLimits(**data.get("limits") or {})
        data["models"] = tuple(data.get("models") or ())
        return cls(**data)


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")  # shown in logs, metrics and lists


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def digest_of(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key(
    name: str, limits: KeyLimits, models: tuple[str, ...], expires_at: float | None
) -> tuple[str, ApiKey]:
    """A new key: its secret (to show once) and its record."""
    secret = new_secret()
    return secret, ApiKey(name, digest_of(secret), time.time(), limits, models, expires_at)


class KeyExists(ValueError):
    pass


class KeyStore(ABC):
    """Where keys are kept; see the module docstring."""

    @abstractmethod
    async def add(self, key: ApiKey) -> None:
        """Keep `key`; KeyExists if its name is taken."""

    @abstractmethod
    async def all(self) -> list[ApiKey]: ...

    @abstractmethod
    async def revoke(self, name: str) -> bool:
        """Forget the key of that name; False if there was none."""

    @abstractmethod
    async def by_digest(self, digest: str) -> ApiKey | None: ...

    @abstractmethod
    async def any(self) -> bool:
        """Whether any key exists (then every request needs one)."""

    @abstractmethod
    async def note_use(self, key: ApiKey, now: float) -> None: ...

    async def find(self, secret: str) -> ApiKey | None:
        """The live key `secret` is, or None (unknown, revoked or expired)."""
        if not secret.startswith(PREFIX):
            return None
        digest = digest_of(secret)
        key = await self.by_digest(digest)
        if key is None or not hmac.compare_digest(key.digest, digest):
            return None
        now = time.time()
        if key.expired(now):
            return None
        if key.last_used is None or now - key.last_used >= LAST_USED_EVERY:
            await self.note_use(key, now)
        return key

    async def aclose(self) -> None:  # noqa: B027 - a file holds nothing open
        """Release connections."""


class FileKeyStore(KeyStore):
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._keys: dict[str, ApiKey] = {}  # by digest
        # The file as last read (inode, mtime, size): a rename makes a new inode, so even two
        # writes within one clock tick are told apart.
        self._read_at: tuple[int, int, int] | None = None

    def _current(self) -> dict[str, ApiKey]:
        """The keys as the file has them now (read again only when it changed)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._keys, self._read_at = {}, None
            return self._keys
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        # Within 2 s of its last change the file is read again each time: a coarse clock
        # (1 s on some filesystems) could give two writes the same mtime, size and inode.
        if seen != self._read_at or time.time() - stat.st_mtime < 2.0:
            records = orjson.loads(self.path.read_bytes()) if stat.st_size else []
            self._keys = {k.digest: k for k in map(ApiKey.of, map(orjson.dumps, records))}
            self._read_at = seen
        return self._keys

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, ApiKey]]:
        """The keys, read afresh under an exclusive lock (`<file>.lock`) that every writer
        takes, so that a server noting a key's use cannot write back a key just revoked, or
        drop one just created, by another process."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        with open(lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                self._read_at = None  # read again: another process may have written
                yield self._current()
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _write(self, keys: dict[str, ApiKey]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = orjson.dumps([asdict(k) for k in keys.values()], option=orjson.OPT_INDENT_2)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".keys-")
        try:
            try:
                os.fchmod(handle, 0o600)
                os.write(handle, data)
                os.fsync(handle)
            finally:
                os.close(handle)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        self._keys, self._read_at = dict(keys), None

    async def add(self, key: ApiKey) -> None:
        with self._locked() as keys:
            if any(k.name == key.name for k in keys.values()):
                raise KeyExists(key.name)
            self._write({**keys, key.digest: key})

    async def all(self) -> list[ApiKey]:
        return sorted(self._current().values(), key=lambda k: k.created_at)

    async def revoke(self, name: str) -> bool:
        with self._locked() as keys:
            kept = {d: k for d, k in keys.items() if k.name != name}
            if len(kept) == len(keys):
                return False
            self._write(kept)
            return True

    async def by_digest(self, digest: str) -> ApiKey | None:
        return self._current().get(digest)

    async def any(self) -> bool:
        return bool(self._current())

    async def note_use(self, key: ApiKey, now: float) -> None:
        """A write (and an fsync) once a minute per key, in a thread: off the event loop."""
        await asyncio.to_thread(self._note_use, key, now)

    def _note_use(self, key: ApiKey, now: float) -> None:
        with contextlib.suppress(OSError), self._locked() as keys:  # read-only: unrecorded
            if key.digest in keys:
                self._write({**keys, key.digest: replace(keys[key.digest], last_used=now)})


class RedisKeyStore(KeyStore):
    """Keys in Redis. While Redis cannot be reached no key can be checked, so every guarded
    request is refused with StoreUnavailable (503), as new streams are then anyway."""

    def __init__(self, client: RedisClient, *, owned: bool = False) -> None:
        self.redis = client  # the replica's one client (the log's), or the CLI's own (owned)
        self._owned = owned
        self._any: tuple[float, bool] = (-1.0, False)  # when last asked, and the answer
        self._used: dict[str, float] = {}  # last use noted here, by digest: a write a minute
        self._carried_over = False

    async def add(self, key: ApiKey) -> None:
        await self._carry_over()
        if not await self.redis.hsetnx(_NAMES, key.name, key.digest):
            raise KeyExists(key.name)
        await self.redis.hset(_KEYS, key.digest, key.record())

    async def _carry_over(self) -> None:
        """Copy keys from where releases before the hash tag kept them, once a process; a
        field already here wins (it is newer)."""
        if self._carried_over:
            return
        for before, now in _BEFORE.items():
            old: Any = await self.redis.hgetall(before)
            for field_name, value in old.items():
                await self.redis.hsetnx(now, field_name, value)
        self._carried_over = True

    async def all(self) -> list[ApiKey]:
        await self._carry_over()
        records = await self.redis.hgetall(_KEYS)
        used = await self.redis.hgetall(_USED)
        keys = [ApiKey.of(raw) for raw in records.values()]
        keys = [replace(k, last_used=float(used.get(k.digest.encode()) or 0) or None) for k in keys]
        return sorted(keys, key=lambda k: k.created_at)

    async def revoke(self, name: str) -> bool:
        await self._carry_over()
        digest = await self.redis.hget(_NAMES, name)
        if digest is None:
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(_KEYS, digest)
            pipe.hdel(_NAMES, name)
            pipe.hdel(_USED, digest)
            await pipe.execute()
        async with self.redis.pipeline(transaction=False) as pipe:  # where old releases look
            for before, field_name in zip(_BEFORE, (digest, name, digest), strict=True):
                pipe.hdel(before, field_name)
            await pipe.execute()
        return True

    async def by_digest(self, digest: str) -> ApiKey | None:
        try:
            await self._carry_over()  # `[auth] required` skips any(): it must happen here too
            raw = await self.redis.hget(_KEYS, digest)
        except UNAVAILABLE:
            raise StoreUnavailable() from None
        if raw is None:
            return None
        return replace(ApiKey.of(raw), last_used=self._used.get(digest))

    async def any(self) -> bool:
        """Asked at most once a second: a request with no key must not cost a round trip."""
        asked, answer = self._any
        now = time.monotonic()
        if asked < 0 or now - asked >= 1.0:
            try:
                await self._carry_over()
                answer = bool(await self.redis.hlen(_KEYS))
            except UNAVAILABLE:
                raise StoreUnavailable() from None
            self._any = (now, answer)
        return answer

    async def note_use(self, key: ApiKey, now: float) -> None:
        """In a hash of its own: rewriting the key's record could bring back a key revoked
        between the read and the write."""
        with contextlib.suppress(*UNAVAILABLE):  # only bookkeeping
            await self.redis.hset(_USED, key.digest, str(now))
        self._used[key.digest] = now

    async def aclose(self) -> None:
        if self._owned:
            await self.redis.aclose()


def where(redis_url: str, keys_file: str) -> str:
    """Where `key_store` keeps keys, for a person to read."""
    return "Redis" if redis_url else f"{Path(keys_file).resolve()}"


def key_store(keys_file: str, client: RedisClient | None) -> KeyStore:
    """The replica's keys: in Redis through its client, if it has one; else in the file."""
    return RedisKeyStore(client) if client is not None else FileKeyStore(keys_file)


def key_store_at(redis_url: str, keys_file: str, *, cluster: bool = False) -> KeyStore:
    """The same store for a command run outside the server, with a client of its own."""
    if not redis_url:
        return FileKeyStore(keys_file)
    client = aioredis.RedisCluster if cluster else aioredis.Redis
    return RedisKeyStore(client.from_url(redis_url, socket_connect_timeout=2.0), owned=True)
