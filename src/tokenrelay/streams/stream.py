"""One generation: the producer task that runs a provider and writes a stream's events.

`Stream.run()` appends `start`, then a `token` per text delta, then exactly one terminal event:

    done       the provider finished (finish_reason, counts, timings, usage)
    error      the provider failed (GenerationError, mapped through the errors table), the answer
               outgrew the log, a deadline passed, or a bug (internal_error; details only in logs)
    cancelled  someone cancelled the task (client gone, DELETE, resume window over)

Cancelling the task is the only way to stop a generation. It lands wherever the provider is
waiting, including before the first token, and the provider's cleanup then closes the
upstream response. The task pulls the provider's deltas, one step per upstream read; each
delta is logged there and then, and the log hands it to every caught-up subscriber
(`subscription.py`), which writes it to its client in the same step.
A cancel for shutdown ends with a retryable `error` (`server_shutdown`) rather than
`cancelled`, so clients know to come back.

Before the first token, a retryable failure (rate limit, overload, 5xx, network, timeout) is
retried up to `max_retries` times with exponential backoff and full jitter, never sooner than
the upstream's `Retry-After` (capped at `max_retry_after`); a `status` event says so each
time. After the first token nothing is retried by default: the text already sent stays, and
the stream ends with `error`. With `continue_on_error` (the request's `on_upstream_error:
"continue"`), a retryable failure after tokens re-requests a continuation of the partial
answer instead (`Provider.continuation`), within the same retry budget, so the client sees one
answer. What the continuation repeats of the already-sent text (`overlap`) is dropped.

Deadlines (`StreamsSection`): `total_timeout` for the whole stream (`asyncio.timeout`), and
per attempt an `IdleTimeout` of `first_token_timeout`, then `idle_timeout` between deltas,
which a delta pushes back by storing its time. A stuck upstream becomes `timeout` or
`stalled`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from contextlib import aclosing
from typing import Any

from tokenrelay import events as ev
from tokenrelay import logs
from tokenrelay.errors import (
    GenerationError,
    ProducerLost,
    Stalled,
    StoreUnavailable,
    StreamTooLarge,
    UpstreamTimeout,
    client_message,
)
from tokenrelay.metrics import METRICS
from tokenrelay.providers.base import Delta, GenerationRequest, Provider, ToolDelta, Usage
from tokenrelay.settings import StreamsSection
from tokenrelay.shaping.jsonstream import NOTHING
from tokenrelay.shaping.shaper import Shaper, Shaping
from tokenrelay.streams.log import StreamLog
from tokenrelay.streams.structured import Structured
from tokenrelay.timers import IdleTimeout

logger = logging.getLogger("tokenrelay.stream")

SHUTDOWN = "server_shutdown"


def retry_delay(limits: StreamsSection, attempt: int, retry_after: float | None) -> float:
    """Full jitter on an exponential ceiling, but never before the (capped) Retry-After."""
    jittered = random.uniform(0, limits.retry_base_delay * 2**attempt)
    floor = min(retry_after, limits.max_retry_after) if retry_after else 0.0
    return max(jittered, floor)


# What a takeover cannot continue from (see Stream._take_over).
_NOT_CONTINUABLE = frozenset({"reasoning", "tool_call", "json"})

_PROMPT_FIGURES = frozenset(
    {"prompt_tokens", "prompt_tokens_details", "cache_creation_input_tokens"}
)


class Stream:
    def __init__(
        self,
        stream_id: str,
        model: str,
        provider: Provider,
        request: GenerationRequest,
        log: StreamLog,
        limits: StreamsSection,
        *,
        continue_on_error: bool = False,
        shaping: Shaping | None = None,
        include_reasoning: bool = True,
        validate_tool_arguments: bool = False,
    ) -> None:
        self.stream_id = stream_id
        self.model = model
        self._provider = provider
        self._request = request
        self._log = log
        self._limits = limits
        self._parts: list[str] | None = [] if continue_on_error else None  # kept only if needed
        self._overlap = ""
        self._shaping = shaping if shaping is not None and shaping.active else None
        self._shaper: Shaper | None = None  # made in run(): it needs the running loop
        self._continuations = 0
        self._seq = 0
        self.ended = False
        self.cancel_reason = "cancelled"
        self.cancel_requested_at: float | None = None  # monotonic; set by whoever cancels
        self.token_count = 0
        # How it ended (terminal type, error type) and what it cost, once it has: for the
        # caller's usage (auth/usage.py).
        self.ending: tuple[str, str] = ("", "")
        self._ending_event: ev.Event | None = None
        self._started_at = time.monotonic()
        self._first_token_at: float | None = None
        self._last_token_at: float | None = None
        # The attempt in flight, as `_on_delta` needs it (`_generate` sets them).
        self._idle: IdleTimeout | None = None
        self._finish = "stop"
        self._usage: Usage | None = None
        self._usage_told = False  # a `usage` event went out (the prompt's count, early)
        self._usage_counts_answer = False  # the last count came once the answer had begun
        self._structured = Structured(
            self._emit_structured,
            tools=request.tools,
            validate=validate_tool_arguments,
            include_reasoning=include_reasoning,
        )

    @property
    def output_pieces(self) -> int:
        """What the model has written so far: text tokens, reasoning and call pieces."""
        return self.token_count + self._structured.pieces

    @property
    def final_usage(self) -> dict[str, Any]:
        """What the stream's terminal event says it cost ({} before it has one). Read only for
        a key's usage, so the payload is parsed then, not on every stream's end."""
        event = self._ending_event
        usage: dict[str, Any] = (event.payload().get("usage") or {}) if event is not None else {}
        return usage

    def _next_seq(self) -> int:
        return self._seq + 1

    async def _append(self, event: ev.Event) -> None:
        # The seq advances only once the log took the event: a refused append leaves no gap.
        # A cancel while the write is in flight does not undo it (logs finish their writes),
        # so the seq is spent then too, and the ending that follows comes after it.
        try:
            await self._log.append(self.stream_id, event)
        except asyncio.CancelledError:
            self._seq = event.seq
            raise
        self._seq = event.seq

    async def run(self, taken_over: list[ev.Event] | None = None) -> None:
        """Generate; `taken_over`: the events of a stream whose producer (another replica)
        was lost, which this one continues (`on_producer_lost = "continue"`)."""
        logs.stream_id.set(self.stream_id)  # this task's own context: every line it logs
        try:
            await self._run(taken_over)
        except StoreUnavailable:
            # The log could not store this stream's events: nothing more can reach a reader,
            # not even an ending. Leaving closes the upstream; readers get their own error.
            if not self.ended:
                self.ended = True
                self.ending = ("error", "store_unavailable")
                self._ending_event = ev.error_event(
                    0, "store_unavailable", "", True, usage=self._estimated_usage()
                )
                METRICS.stream_ended("error", "store_unavailable")
            ending = ev.error_event(
                self._seq + 1, "store_unavailable", client_message("store_unavailable"), True
            )
            with contextlib.suppress(StoreUnavailable, ValueError):
                self._log.append_nowait(self.stream_id, ending)  # refused; the log forgets it

    async def _run(self, taken_over: list[ev.Event] | None) -> None:
        try:
            if taken_over is None:
                await self._append(ev.start_event(self._next_seq(), self.stream_id, self.model))
                request = self._request
            else:
                request = await self._take_over(taken_over)
            if self._shaping is not None:
                self._shaper = Shaper(self._shaping, self._emit_token, self._emit_json)
            try:
                async with asyncio.timeout(self._limits.total_timeout):
                    finish, usage = await self._generate_with_retries(request)
            except TimeoutError:
                raise UpstreamTimeout("total deadline") from None
            if finish == "stop" and self._structured.calls:
                # Some OpenAI-compatible servers (Ollama, vLLM) end an answer with calls as
                # "stop"; agent loops run the tools on tool_calls / tool_use only.
                finish = "tool_calls"
            parsed = self._shaper.finish() if self._shaper is not None else NOTHING
            await self._end(self._done_event(finish, usage, parsed))
        except asyncio.CancelledError:
            await self.end_cancelled()
            raise
        except GenerationError as exc:
            logger.info(
                "stream %s failed: %s (%s)",
                self.stream_id,
                exc.error_type,
                exc,
                extra={"request_id": self._request.request_id},
            )
            await self._end_with_error(
                exc.error_type, retryable=exc.retryable, retry_after=exc.retry_after
            )
        except StoreUnavailable:
            raise  # not this stream's fault, and no ending can be stored: see run()
        except Exception:
            logger.exception(
                "stream %s crashed (request %s)", self.stream_id, self._request.request_id
            )
            await self._end_with_error("internal_error", retryable=False)

    async def end_cancelled(self) -> None:
        """End with the terminal event the cancel reason calls for (no-op if already ended).

        Called once the provider's generator is closed, so the time since the cancel was asked
        is how long the upstream response took to close.
        """
        if not self.ended:
            asked = self.cancel_requested_at
            METRICS.cancelled(
                "streaming" if self._first_token_at is not None else "before_first_token",
                self.cancel_reason,
                time.monotonic() - asked if asked is not None else None,
            )
        if self.cancel_reason == SHUTDOWN:
            await self._end_with_error(SHUTDOWN, retryable=True)
        elif not self.ended:
            logger.info("stream %s cancelled: %s", self.stream_id, self.cancel_reason)
            self._release_held()
            event = ev.cancelled_event(
                self._next_seq(), self.cancel_reason, self._estimated_usage()
            )
            await self._end(event)

    async def _take_over(self, events: list[ev.Event]) -> GenerationRequest:
        """Carry on from the events another replica wrote before it died: its text becomes
        the partial answer that a continuation picks up (as after an upstream error), and a
        `status` event marks the seam. Text only: a continuation never resumes inside a
        call, or after reasoning, so such a stream ends with `producer_lost`, as it would
        without a takeover."""
        if not events:  # it died before its first event: start afresh
            await self._append(ev.start_event(self._next_seq(), self.stream_id, self.model))
            return self._request
        self._seq = events[-1].seq
        if any(event.type in _NOT_CONTINUABLE for event in events):
            raise ProducerLost()
        asked_to_continue = self._parts is not None  # on_upstream_error: "continue"
        self._parts = [event.payload()["content"] for event in events if event.type == "token"]
        self.token_count = len(self._parts)
        if self.token_count:  # the answer had begun: what follows is not a first token
            self._first_token_at = self._last_token_at = time.monotonic()
        note = "The server generating this answer stopped; another server continues it."
        await self._append(ev.status_event(self._next_seq(), note))
        request = self._continue() if self.token_count else self._request
        if not asked_to_continue:  # a later upstream error ends it, as the caller asked
            self._parts = None
        return request

    async def _generate_with_retries(self, request: GenerationRequest) -> tuple[str, Usage | None]:
        attempt = 0
        while True:
            try:
                return await self._generate(request)
            except GenerationError as exc:
                structured = self._structured
                fresh = self.token_count == 0 and not structured.pieces and not structured.calls
                # A continuation carries on text: never from inside a call or reasoning.
                continuable = self._parts is not None and not structured.calls
                resumable = fresh or (continuable and not structured.reasoned)
                max_retries = self._limits.max_retries
                if not (exc.retryable and resumable and attempt < max_retries):
                    raise
                delay = retry_delay(self._limits, attempt, exc.retry_after)
                METRICS.retried(exc.error_type)
                attempt += 1
                logger.info(
                    "stream %s: %s after %d tokens; attempt %d in %.2fs",
                    self.stream_id,
                    exc.error_type,
                    self.token_count,
                    attempt + 1,
                    delay,
                )
                if self.token_count and self._parts is not None:
                    request = self._continue()
                what = "continuing the answer" if self.token_count else "retrying"
                note = (
                    f"The model provider answered {exc.error_type}; {what} in {delay:.1f}s "
                    f"(attempt {attempt + 1} of {max_retries + 1})."
                )
                await self._append(ev.status_event(self._next_seq(), note, retry_in=delay))
                await asyncio.sleep(delay)

    def _continue(self) -> GenerationRequest:
        assert self._parts is not None
        partial = "".join(self._parts)
        continuation = self._provider.continuation(self._request, partial, self.token_count)
        self._overlap = continuation.overlap
        self._continuations += 1
        return continuation.request

    async def _generate(self, request: GenerationRequest) -> tuple[str, Usage | None]:
        self._finish, self._usage = "stop", None
        limits = self._limits
        try:
            async with IdleTimeout(limits.first_token_timeout, limits.idle_timeout) as idle:
                self._idle = idle
                async with aclosing(self._provider.stream(request)) as deltas:
                    async for delta in deltas:
                        self._on_delta(delta)
        except TimeoutError:
            began = self._first_token_at is not None or self._structured.pieces
            raise (Stalled() if began else UpstreamTimeout()) from None
        self._structured.finish()  # calls still open end with the answer
        return self._finish, self._usage

    def _on_delta(self, delta: Delta) -> None:
        """One delta from the provider: once per token, so written out flat."""
        text, finish, usage, reasoning, signature, redacted, tool, logprobs = delta
        if usage is not None:
            self._on_usage(usage)
        if finish:
            self._finish = finish
        if not text:
            self._on_other(reasoning, signature, redacted, tool, logprobs)
            return
        now = time.monotonic()  # one clock read per delta, for both uses
        assert self._idle is not None
        self._idle.last = now
        if reasoning or signature or redacted:  # thinking comes before the words it leads to
            self._on_other(reasoning, signature, redacted, None, None)
        if self._overlap:
            # A continuation's first words may repeat what was sent (e.g. trimmed whitespace).
            text, self._overlap = text.removeprefix(self._overlap), ""
            if not text:
                return
        if self._parts is not None:
            self._parts.append(text)
        if self._last_token_at is None:
            self._first_token_at = now
            METRICS.ttft.observe(now - self._started_at)
        else:
            METRICS.token_gap.observe(now - self._last_token_at)
        self._last_token_at = now
        self.token_count += 1
        METRICS.tokens += 1
        if self._shaper is None:  # _emit_token and _append_nowait, written out
            event = ev.token_event(self._seq + 1, text)
            self._log.append_nowait(self.stream_id, event)
            self._seq = event.seq
        else:
            self._shaper.feed(text)
        # Asked for: after the text they score; with word or line chunking, that text may
        # still be held for its word to end, so they can come before it.
        if logprobs is not None:
            self._emit_logprobs(logprobs)
        if tool is not None:  # a call after the words (no decoder sends both in one delta)
            self._on_other("", "", "", tool, None)

    def _on_other(
        self,
        reasoning: str,
        signature: str,
        redacted: str,
        tool: ToolDelta | None,
        logprobs: list[Any] | None,
    ) -> None:
        """What a delta carries besides text. A count or a finish alone is no sign of the
        answer yet (Anthropic's message_start comes at once): the first-token deadline holds."""
        if not (reasoning or signature or redacted or tool is not None or logprobs is not None):
            return
        assert self._idle is not None
        self._idle.last = time.monotonic()
        if reasoning or signature or redacted or tool is not None:
            if self._shaper is not None:
                self._shaper.flush_text()  # held words go before, never after or inside
            if reasoning or signature or redacted:
                self._structured.reasoning(reasoning, signature, redacted)
            if tool is not None:
                self._structured.tool(tool)
        if logprobs is not None:
            self._emit_logprobs(logprobs)

    def _on_usage(self, usage: Usage) -> None:
        """The last count wins; the first, if it comes before the answer (the prompt's size,
        from Anthropic's message_start), also goes out as a `usage` event: its prompt figures
        only, as the completion has not begun (Anthropic's placeholder of 1 is not a count)."""
        self._usage = usage
        self._usage_counts_answer = self._first_token_at is not None or self._structured.pieces > 0
        if not self._usage_told and not self._usage_counts_answer:
            self._usage_told = True
            prompt = {k: v for k, v in usage.as_dict().items() if k in _PROMPT_FIGURES}
            self._append_nowait(ev.usage_event(self._next_seq(), prompt))

    def _emit_structured(self, type_: ev.EventType, fields: dict[str, Any]) -> None:
        self._append_nowait(ev.make_event(self._next_seq(), type_, **fields))

    def _emit_logprobs(self, scores: list[Any]) -> None:
        self._append_nowait(ev.make_event(self._next_seq(), "logprobs", content=scores))

    def _emit_token(self, text: str) -> None:
        self._append_nowait(ev.token_event(self._seq + 1, text))

    def _emit_json(self, partial: Any) -> int:
        event = ev.json_event(self._next_seq(), partial)
        self._append_nowait(event)
        return len(event.data)

    def _append_nowait(self, event: ev.Event) -> None:
        # Synchronous: no coroutine per token, and callable from the shaper's hold timer while
        # this task waits for the upstream. The seq advances only once the log took the event.
        self._log.append_nowait(self.stream_id, event)
        self._seq = event.seq

    def _done_event(self, finish: str, usage: Usage | None, parsed: Any = NOTHING) -> ev.Event:
        now = time.monotonic()
        first, last = self._first_token_at, self._last_token_at
        # Decode rate, first token to last: TTFT is reported on its own, so it is left out here.
        rate = 0.0
        if first is not None and last is not None and last > first:
            rate = (self.token_count - 1) / (last - first)
        return ev.make_event(
            self._next_seq(),
            "done",
            finish_reason=finish,
            token_count=self.token_count,
            elapsed_seconds=round(now - self._started_at, 3),
            tokens_per_second=round(rate, 1),
            ttft_ms=round((first - self._started_at) * 1000, 1) if first is not None else None,
            usage=self._final_usage(usage),
            **({} if parsed is NOTHING else {"parsed": parsed}),
        )

    def _final_usage(self, usage: Usage | None) -> dict[str, Any]:
        if usage is None or self._continuations:  # no single upstream count covers it all
            return self._estimated_usage()
        return self._reported(usage)

    @staticmethod
    def _reported(usage: Usage) -> dict[str, Any]:
        return usage.as_dict()

    async def _end_with_error(
        self, error_type: str, *, retryable: bool, retry_after: float | None = None
    ) -> None:
        message = client_message(error_type)
        self._release_held()
        usage = self._estimated_usage()
        if error_type == "content_filter" and self._usage_counts_answer:
            # A filter ends the answer rather than cutting the connection: the upstream
            # still counts what it said (OpenAI's usage chunk, Anthropic's message_delta).
            usage = self._final_usage(self._usage)
        event = ev.error_event(self._next_seq(), error_type, message, retryable, retry_after, usage)
        await self._end(event, error_type)

    def _estimated_usage(self) -> dict[str, Any]:
        """What a stream cost as far as we can tell, when the upstream never said it all.

        The prompt is the upstream's count if it gave one (Anthropic does, before the
        answer), else four characters a token; completion tokens are the pieces relayed
        (text, reasoning, arguments). `estimated` names the figures that are ours, so nobody
        bills from them as if they were the upstream's.
        """
        told = self._usage
        prompt = told.prompt_tokens if told is not None else self._request.estimated_prompt_tokens
        completion = self.token_count + self._structured.pieces
        estimated = ["completion_tokens", "total_tokens"]
        if told is None or self._continuations:
            estimated.insert(0, "prompt_tokens")
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "estimated": estimated,
        }

    async def _end(self, event: ev.Event, error_type: str = "") -> None:
        if self.ended:
            return
        self.ended = True
        self.ending = (event.type, error_type)
        self._ending_event = event
        METRICS.stream_ended(event.type, error_type)
        await self._append(event)

    def _release_held(self) -> None:
        """Held words go out before an error or cancel ending (which is accepted even when
        the log refuses more text)."""
        if self._shaper is not None and not self.ended:
            with contextlib.suppress(StreamTooLarge):
                self._shaper.close()
