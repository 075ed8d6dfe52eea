"""The stream log: where a producer writes events and subscribers read them, by cursor.

Contract (one test suite, `tests/streams/test_log_contract.py`, runs it against every backend):

- `create(stream_id, meta)` registers a stream before its first event. Creating an existing id
  raises `ValueError` (ids are random; a clash is a bug).
- `append(stream_id, event)` stores `event`, whose `seq` must be exactly one more than the last
  (the first is 1). It wakes every reader waiting on that stream. A backend may write
  non-terminal events asynchronously (in order, promptly); a terminal append returns only once
  every event up to it is stored, and `flush()` waits for the rest. `append_nowait` is the
  same without any waiting, so it can be called from a timer callback (held words) and costs
  no coroutine per token; it checks and refuses exactly like `append`. Appending after a terminal
  event raises `ValueError`: a stream has exactly one ending. When a non-terminal event would
  take the stream past `max_bytes`, it raises `StreamTooLarge` and stores nothing; the producer
  then ends the stream with an `error` (terminal events are always accepted).
- `read(stream_id, after, wait)` returns every stored event with `seq > after`, in order. If
  there is none yet it waits until one is appended, or `wait` seconds pass (then it returns
  `[]`). It never busy-waits. A reader that has the terminal event reads no further (the
  memory backend answers `[]` at once then; others may wait out `wait`). Unknown streams
  raise `UnknownStream`; streams that existed and passed their TTL raise `StreamExpired` (a
  subclass), for as long as the backend remembers them.
- `status(stream_id)` returns the last seq and whether the stream has ended; it raises
  `UnknownStream` like `read`. Subscribers use it to tell "nothing yet" from "nothing ever".
- `meta(stream_id)` returns the stream's metadata, or None if unknown or expired.
- A finished stream stays readable for `ttl` seconds after its terminal event, then expires.
- `add_subscriber` / `remove_subscriber` count readers across every process sharing the log
  and return the new count; the last one out lets the disconnect policy act.
- `close()` releases the backend's resources; safe to call twice.
- A backend that can become unreachable (Redis) raises `StoreUnavailable` from any call while
  it is: at once for `create`, after riding out `grace` seconds for reads and for the writes
  of a stream under way. A stream whose writes failed refuses every later append with it.
  `ready()` says whether it is reachable now.

Following: `attach(stream_id, after, follower)` registers a reader that has every event up to
`after`; from then on the log calls `follower.push(event)` for each event it stores, in order:
the memory log inside the append itself (so the producer delivers it); Redis, on the
producing replica, once Redis has acknowledged the write, and elsewhere from one shared reader
per stream and process. `push` returns False to be detached. A follower skips an event it
already has (seq <= its cursor) and reads from the log on a gap. `attach` refuses (False) when
the follower should read first: the memory log when events after `after` are stored or the
stream has ended; Redis when the shared reader is past `after`, or, on the producing replica,
when what the follower lacks has left the stream's tail (its last events, which `attach` hands
it at once). `detach` is safe to call twice; `close()` calls `follower.interrupt()`.
`read` with `wait <= 0` answers at once (a subscription's replay).

Cluster hooks, for backends shared by several processes (no-ops in a single process):
`publish(message)` sends a control message (`{"kind": "cancel" | "abandoned", "stream_id",
"reason"}`) to every process, `control_messages()` yields those sent by anyone, and
`renew_leases()` keeps this process's producing streams from being declared lost, and
`claim()` lets one process take over a stream whose producer was lost (`take_over`).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from tokenrelay.events import Event

logger = logging.getLogger("tokenrelay.log")


class Follower(Protocol):
    """A caught-up reader that the log hands each new event to, as it stores it."""

    def push(self, event: Event) -> bool:
        """Take `event` (in order, as the log stores it); False to be detached."""
        ...

    def interrupt(self) -> None:
        """Stop following (the log is closing, or cannot go on): read from the log instead."""
        ...


def follower_failed(follower: Follower) -> bool:
    """A follower raised: log it and stop it (False: detach it). A reader's bug must not fail
    the writer whose append, or shared read, handed it the event."""
    logger.exception("follower failed; detached")
    follower.interrupt()
    return False


def hand_over(followers: list[Follower], event: Event) -> None:
    """Hand `event` to each of `followers`, removing those that decline it or fail."""
    for follower in followers.copy():
        try:
            keep = follower.push(event)
        except Exception:
            keep = follower_failed(follower)
        if not keep and follower in followers:
            followers.remove(follower)


@dataclass(frozen=True, slots=True)
class StreamStatus:
    last_seq: int
    ended: bool


class StreamMeta(NamedTuple):
    """A named tuple of plain values: an ended stream's record, kept for the TTL, is then
    nothing the garbage collector tracks (see log_memory)."""

    stream_id: str
    model: str
    owner: str = ""  # who may attach or cancel; empty until authentication exists
    created_at: float = 0.0


class StreamLog(ABC):
    renew_every: float | None = None  # seconds between renew_leases() calls; None: never

    def __init__(self, *, max_bytes: int, ttl: float) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl

    # Takes over a stream whose producer was lost (another replica's, dead): set by the
    # manager when `on_producer_lost = "continue"`; True if this process now produces it.
    take_over: Callable[[str], Awaitable[bool]] | None = None

    @abstractmethod
    async def create(self, stream_id: str, meta: StreamMeta, handoff: bytes = b"") -> None:
        """Start a stream; `handoff` (streams/handoff.py) lets another process take it over
        if this one dies producing it (a backend shared by several processes keeps it)."""

    async def claim(self, stream_id: str) -> tuple[bytes, list[Event]] | None:
        """Become the producer of a stream whose producer was lost, atomically (one process
        wins): its hand-off and every event so far, or None (no hand-off, ended, or another
        process was quicker). A single-process log has no one to take over from."""
        return None

    @abstractmethod
    def append_nowait(self, stream_id: str, event: Event) -> None: ...

    async def append(self, stream_id: str, event: Event) -> None:
        self.append_nowait(stream_id, event)
        if event.terminal:
            await self.flush()

    @abstractmethod
    async def read(self, stream_id: str, after: int, wait: float) -> list[Event]: ...

    @abstractmethod
    def attach(self, stream_id: str, after: int, follower: Follower) -> bool:
        """Hand `follower` every event after `after` as it is stored; False if not (see above)."""

    @abstractmethod
    def detach(self, stream_id: str, follower: Follower) -> None:
        """Stop handing `follower` events."""

    @abstractmethod
    async def status(self, stream_id: str) -> StreamStatus: ...

    @abstractmethod
    async def add_subscriber(self, stream_id: str) -> int: ...

    @abstractmethod
    async def remove_subscriber(self, stream_id: str) -> int: ...

    @abstractmethod
    async def meta(self, stream_id: str) -> StreamMeta | None: ...

    @abstractmethod
    async def subscribers(self, stream_id: str) -> int: ...

    async def publish(self, message: dict[str, Any]) -> None:  # noqa: B027 - one process
        """Send a control message to every process sharing this log."""

    async def control_messages(self) -> AsyncIterator[dict[str, Any]]:
        """Control messages from every process; a single-process log has none."""
        return
        yield  # pragma: no cover - makes this an async generator

    async def flush(self) -> None:  # noqa: B027 - the memory log stores synchronously
        """Return once every appended event is stored."""

    async def renew_leases(self) -> None:  # noqa: B027 - one process: nobody to convince
        """Refresh the leases of the streams this process produces."""

    async def ready(self) -> bool:
        """Whether the backend can be reached now (`/healthz`); it checks, briefly."""
        return True

    async def close(self) -> None:  # noqa: B027 - nothing to release in the simplest backend
        """Release resources. Safe to call twice."""
