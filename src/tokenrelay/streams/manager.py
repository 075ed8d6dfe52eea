"""The streams this process runs: start, subscribe, cancel, disconnect policy, drain.

The manager owns every producer task it starts. Subscribers register while they read; when the
last one leaves a stream that is still generating, the stream's `on_disconnect` policy decides:

    cancel   cancel the producer now (the default: a closed tab stops the bill)
    detach   keep generating for `resume_window` seconds; cancel then unless someone came back

Draining (SIGTERM) refuses new streams at once and gives running ones `drain_timeout` seconds
to finish; what is still running then is cancelled with a retryable `server_shutdown` error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from tokenrelay._types import DisconnectPolicy
from tokenrelay.auth.keys import ApiKey, KeyStore
from tokenrelay.auth.limits import Limiter, MemoryLimiter
from tokenrelay.auth.usage import MemoryUsageBook, UsageBook, figures
from tokenrelay.errors import ServiceUnavailable, StoreUnavailable, client_message
from tokenrelay.events import error_event
from tokenrelay.metrics import METRICS
from tokenrelay.providers.base import GenerationRequest, Provider
from tokenrelay.settings import StreamsSection
from tokenrelay.shaping.shaper import Shaping
from tokenrelay.streams import handoff
from tokenrelay.streams.handoff import HandOff
from tokenrelay.streams.log import StreamLog, StreamMeta
from tokenrelay.streams.stream import SHUTDOWN, Stream

logger = logging.getLogger("tokenrelay.streams")

UNREAD_GRACE = 5.0  # seconds a taken-over stream may run before anyone reads it

# The registry's resolve: a model's name to its provider, the name it is given, and the
# canonical name.
Resolve = Callable[[str], tuple[Provider, str, str]]


def new_stream_id() -> str:
    """128 random bits, URL-safe, never containing the `:` that separates an event's seq."""
    return "str_" + secrets.token_urlsafe(16)


@dataclass(slots=True)
class _Running:
    stream: Stream
    task: asyncio.Task[None]
    policy: DisconnectPolicy
    detach_timer: asyncio.TimerHandle | None = None
    owner: str = ""  # the API key's name that holds a slot for it ("": no key)
    key_digest: str = ""
    counted: int = 0  # its output pieces reported to the limiter so far


class StreamManager:
    def __init__(
        self,
        log: StreamLog,
        settings: StreamsSection,
        limiter: Limiter | None = None,
        usage: UsageBook | None = None,
        keys: KeyStore | None = None,
        take_over_with: Resolve | None = None,
    ) -> None:
        self.log = log
        self.settings = settings
        self.limiter = limiter or MemoryLimiter()
        self.usage = usage or MemoryUsageBook()
        self.keys = keys  # to end the streams of a key revoked while they run
        self._running: dict[str, _Running] = {}
        self._draining = False
        self._endings: set[asyncio.Task[None]] = set()
        self._background: list[asyncio.Task[None]] = []
        # With it (on_producer_lost = "continue"), streams are created with a hand-off, and
        # this replica takes over those whose producer died: the registry's resolve.
        self._resolve = take_over_with
        if take_over_with is not None:
            log.take_over = self._take_over

    @property
    def active_count(self) -> int:
        return len(self._running)

    @property
    def draining(self) -> bool:
        return self._draining

    async def start(
        self,
        request: GenerationRequest,
        provider: Provider,
        model: str,
        *,
        on_disconnect: DisconnectPolicy = "cancel",
        continue_on_error: bool = False,
        key: ApiKey | None = None,
        shaping: Shaping | None = None,
        include_reasoning: bool = True,
        validate_tool_arguments: bool = False,
    ) -> str:
        """Start a stream; its id. With `key`, the stream is its (owner) and takes one of its
        slots, or KeyOverLimit; the slot is given back when the stream's task ends."""
        if self._draining:
            raise ServiceUnavailable()
        stream_id = new_stream_id()
        owner = key.name if key is not None else ""
        digest = key.digest if key is not None else ""
        if key is not None:
            await self.limiter.admit(key, stream_id)
        try:  # until the task exists, nothing else would give the slot back
            plan = b""
            if self._resolve is not None and (shaping is None or not shaping.active):
                options = (on_disconnect, continue_on_error, include_reasoning)
                plan = handoff.dump(
                    HandOff(request, model, *options, validate_tool_arguments, owner, digest)
                )
            meta = StreamMeta(stream_id, model, owner, time.time())
            await self.log.create(stream_id, meta, plan)
            stream = Stream(
                stream_id,
                model,
                provider,
                request,
                self.log,
                self.settings,
                continue_on_error=continue_on_error,
                shaping=shaping,
                include_reasoning=include_reasoning,
                validate_tool_arguments=validate_tool_arguments,
            )
            task = asyncio.create_task(stream.run(), name=f"tokenrelay-{stream_id}")
        except BaseException:
            if key is not None:
                await self.limiter.release(owner, stream_id)
            raise
        self._run(stream, task, on_disconnect, owner, digest)
        logger.debug(  # the request line names the stream (server/middleware.py)
            "stream %s started: %s (request %s)",
            stream_id,
            model,
            request.request_id,
            extra={"stream_id": stream_id},
        )
        return stream_id

    def _run(
        self,
        stream: Stream,
        task: asyncio.Task[None],
        policy: DisconnectPolicy,
        owner: str,
        key_digest: str = "",
        counted: int = 0,
    ) -> None:
        stream_id = stream.stream_id
        self._running[stream_id] = _Running(stream, task, policy, None, owner, key_digest, counted)
        METRICS.active_streams += 1
        task.add_done_callback(lambda _task: self._finished(stream_id))

    async def _take_over(self, stream_id: str) -> bool:
        """Continue here a stream whose producer, another replica, died (the log found its
        lease lapsed). The log's claim is atomic: of every replica that notices, exactly one
        takes it over; the others, and this one if its claim fails, return False. Once
        claimed, the stream is this replica's to end, whatever fails next."""
        if self._draining or self._resolve is None:
            return False
        claimed = await self.log.claim(stream_id)
        if claimed is None:
            return False
        data, events = claimed
        try:
            plan = handoff.load(data)
            provider = self._resolve(plan.model)[0]
            stream = Stream(
                stream_id,
                plan.model,
                provider,
                plan.request,
                self.log,
                self.settings,
                continue_on_error=plan.continue_on_error,
                include_reasoning=plan.include_reasoning,
                validate_tool_arguments=plan.validate_tool_arguments,
            )
        except Exception:  # another release's hand-off, or a model this replica lacks
            logger.exception("stream %s: cannot take it over; it ends", stream_id)
            seq = (events[-1].seq if events else 0) + 1
            lost = error_event(seq, "producer_lost", client_message("producer_lost"), True)
            with contextlib.suppress(StoreUnavailable):  # then its lease lapses again
                await self.log.append(stream_id, lost)
            return True
        task = asyncio.create_task(stream.run(events), name=f"tokenrelay-{stream_id}")
        # Its usage is booked to its key, whose slot it holds here from now on; the pieces
        # the dead replica already counted are not counted again.
        inherited = sum(event.type == "token" for event in events)
        self._run(stream, task, plan.on_disconnect, plan.owner, plan.key_digest, inherited)
        logger.warning("stream %s: its producer was lost; continuing it here", stream_id)
        # Whoever noticed may never read it (a resume refused after the claim): with nobody
        # counted in by then, the disconnect policy applies as if the last reader left.
        self._spawn(self._unless_read(stream_id))
        return True

    async def _unless_read(self, stream_id: str) -> None:
        await asyncio.sleep(UNREAD_GRACE)
        running = self._running.get(stream_id)
        if running is not None and not running.stream.ended:
            with contextlib.suppress(StoreUnavailable):
                if await self.log.subscribers(stream_id) <= 0:
                    self._apply_policy(stream_id, running)

    @asynccontextmanager
    async def subscription(self, stream_id: str) -> AsyncIterator[None]:
        """Count a reader in (across every replica sharing the log) while it reads.

        The last reader out applies the stream's disconnect policy: here if this process runs
        the stream, otherwise by telling the process that does.
        """
        await self.log.add_subscriber(stream_id)
        METRICS.active_subscribers += 1
        running = self._running.get(stream_id)
        if running is not None and running.detach_timer is not None:
            running.detach_timer.cancel()
            running.detach_timer = None
        try:
            yield
        finally:
            METRICS.active_subscribers -= 1
            try:
                left = await self.log.remove_subscriber(stream_id)
            except StoreUnavailable:
                # Uncounted, so nobody can tell whether it was the last reader: the stream
                # goes on (if the store stays away, its producer stops within the grace).
                left = 1
            if left <= 0:
                await self._abandoned(stream_id)

    async def _abandoned(self, stream_id: str) -> None:
        running = self._running.get(stream_id)
        if running is None:
            await self.log.publish({"kind": "abandoned", "stream_id": stream_id})
        elif not running.stream.ended:
            self._apply_policy(stream_id, running)

    def _apply_policy(self, stream_id: str, running: _Running) -> None:
        if running.policy == "cancel":
            self._cancel(running, "client_disconnected")
            return
        logger.info("stream %s detached; resume window %ss", stream_id, self.settings.resume_window)
        if running.detach_timer is not None:
            running.detach_timer.cancel()
        running.detach_timer = asyncio.get_running_loop().call_later(
            self.settings.resume_window, lambda: self._spawn(self._expire_detached(stream_id))
        )

    async def _expire_detached(self, stream_id: str) -> None:
        running = self._running.get(stream_id)
        if running is not None and await self.log.subscribers(stream_id) <= 0:
            self._cancel(running, "resume_window_expired")

    async def cancel(self, stream_id: str, reason: str = "cancelled_by_request") -> bool:
        """Cancel a stream, wherever it runs. False if it had ended; UnknownStream if unknown."""
        running = self._running.get(stream_id)
        if running is not None:
            self._cancel(running, reason)
            return True
        status = await self.log.status(stream_id)  # raises UnknownStream / StreamExpired
        if status.ended:
            return False
        await self.log.publish({"kind": "cancel", "stream_id": stream_id, "reason": reason})
        return True

    async def _on_control(self, message: dict[str, Any]) -> None:
        """A message from another replica, about a stream that may be running here."""
        stream_id = message.get("stream_id")
        running = self._running.get(stream_id) if isinstance(stream_id, str) else None
        if running is None or running.stream.ended:
            return
        if message.get("kind") == "cancel":
            reason = message.get("reason")
            self._cancel(running, reason if isinstance(reason, str) else "cancelled_by_request")
        elif (
            message.get("kind") == "abandoned"
            and await self.log.subscribers(running.stream.stream_id) <= 0
        ):
            self._apply_policy(running.stream.stream_id, running)

    def start_background(self) -> None:
        """Listen for other replicas' control messages and keep this replica's leases fresh."""
        self._background = [
            asyncio.create_task(self._listen(), name="tokenrelay-control"),
            asyncio.create_task(self._renew(), name="tokenrelay-leases"),
            asyncio.create_task(self._every_second(), name="tokenrelay-keys"),
        ]

    async def _listen(self) -> None:
        while True:
            try:
                async for message in self.log.control_messages():
                    await self._on_control(message)
                return  # a single-process log has no messages
            except asyncio.CancelledError:
                raise
            except StoreUnavailable:  # the log has said so, once for the whole outage
                await asyncio.sleep(1.0)
            except Exception:
                logger.exception("control channel failed; reconnecting in 1s")
                await asyncio.sleep(1.0)

    async def _renew(self) -> None:
        every = self.log.renew_every
        while every:
            await asyncio.sleep(every)
            try:
                held = {sid: r.owner for sid, r in self._running.items() if r.owner}
                await self.limiter.renew(held)
                await self.log.renew_leases()
            except StoreUnavailable:
                pass  # said once by the log; the streams under way find out for themselves
            except Exception:
                logger.exception("lease renewal failed")

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._endings.add(task)
        task.add_done_callback(self._endings.discard)

    @staticmethod
    def _cancel(running: _Running, reason: str) -> None:
        if running.stream.ended or running.task.done():
            return
        running.stream.cancel_reason = reason
        running.stream.cancel_requested_at = time.monotonic()
        running.task.cancel()

    def _finished(self, stream_id: str) -> None:
        running = self._running.pop(stream_id, None)
        if running is None:
            return
        METRICS.active_streams -= 1
        if running.detach_timer is not None:
            running.detach_timer.cancel()
        self._spawn(self._after(stream_id, running))

    async def _after(self, stream_id: str, running: _Running) -> None:
        if not running.stream.ended:
            # Cancelled before its first step ran: the coroutine never started, so write the
            # ending here. Exactly one terminal event, whatever the timing.
            await running.stream.end_cancelled()
        if running.owner:  # exactly once per stream, whatever ended it
            await self._give_back(stream_id, running)

    async def _give_back(self, stream_id: str, running: _Running) -> None:
        """The stream's slot back, its last tokens counted, its usage booked to its key."""
        owner, stream = running.owner, running.stream
        await self.limiter.release(owner, stream_id)
        await self.limiter.count_tokens({owner: self._uncounted(running)})
        counts = figures(stream.final_usage)
        METRICS.key_stream_ended(owner, stream.ending, counts)
        await self.usage.record(owner, stream.model, counts)

    @staticmethod
    def _uncounted(running: _Running) -> int:
        pieces = running.stream.output_pieces
        new, running.counted = pieces - running.counted, pieces
        return new

    async def _every_second(self) -> None:
        """Each key's output tokens, as they stream, reported once a second; and the streams
        of a key revoked (or expired) since they started, ended."""
        while True:
            await asyncio.sleep(1.0)
            await self._count_tokens()
            with contextlib.suppress(StoreUnavailable):  # away: nothing is checked, or started
                await self._end_revoked()

    async def _end_revoked(self) -> None:
        if self.keys is None:
            return
        for digest in {r.key_digest for r in self._running.values() if r.key_digest}:
            key = await self.keys.by_digest(digest)
            if key is None or key.expired(time.time()):
                for running in [r for r in self._running.values() if r.key_digest == digest]:
                    self._cancel(running, "key_revoked")

    async def _count_tokens(self) -> None:
        counts: dict[str, int] = {}
        for running in self._running.values():
            if running.owner:
                counts[running.owner] = counts.get(running.owner, 0) + self._uncounted(running)
        if counts:
            try:
                await self.limiter.count_tokens(counts)
            except Exception:
                logger.exception("counting tokens failed")

    def begin_drain(self) -> None:
        """Refuse new streams; cancel what still runs after `drain_timeout`. Idempotent."""
        if self._draining:
            return
        self._draining = True
        logger.info(
            "draining: %d open stream(s), %ss to finish",
            self.active_count,
            self.settings.drain_timeout,
        )
        asyncio.get_running_loop().call_later(self.settings.drain_timeout, self._cancel_all)

    async def drain(self) -> None:
        """`begin_drain`, then return once every stream here has ended and written its ending
        (within `drain_timeout`, after which they are cancelled)."""
        self.begin_drain()
        while self._running or self._endings:  # an ending may be spawned as a task ends
            await asyncio.wait([*(r.task for r in self._running.values()), *self._endings])

    def hurry(self) -> None:
        """End every stream here now, as `drain_timeout` would (a second shutdown signal)."""
        self._cancel_all()

    def _cancel_all(self, reason: str = SHUTDOWN) -> None:
        for running in list(self._running.values()):
            self._cancel(running, reason)

    async def close(self) -> None:
        """Cancel everything still running and wait until each has written its ending."""
        self._draining = True
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        tasks = [r.task for r in self._running.values()]
        self._cancel_all()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*self._endings, return_exceptions=True)
