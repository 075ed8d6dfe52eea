"""One streamed request as the load tester makes it: timed per read, maybe cancelled or dropped.

    plain     read to the ending; record TTFT, every gap between tokens, and the ending
    cancel    after N tokens close the connection (as a Stop button or a closed tab does) and
              note the wall time, so the upstream's record can say when it learnt of it
    drop      after N tokens close the connection, then resume from the last event id on a new
              one (native API only); time from the drop to the first resumed event, and check
              the text against a full replay of the stream: nothing lost, nothing doubled

Times are `perf_counter` seconds; `cancelled_at` is wall time (`time.time()`), the clock the
mock upstream records in.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from tokenrelay.bench import dialects
from tokenrelay.bench.connection import Connection, Pool
from tokenrelay.bench.dialects import Api
from tokenrelay.sse import SSEDecoder

_ERROR_BODY_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class Plan:
    model: str
    prompt: str
    cancel_after: int | None = None
    drop_after: int | None = None
    tag: str = ""


@dataclass(slots=True)
class Result:
    started: float
    ended: float = 0.0
    ttft: float | None = None
    tokens: int = 0
    gaps: list[float] = field(default_factory=list)
    reads: int = 0  # network reads that carried at least one token
    error: str | None = None
    stream_id: str = ""
    tag: str = ""
    cancelled_at: float | None = None  # wall clock
    resume_latency: float | None = None
    exact: bool | None = None  # a dropped stream's text matched the replay

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def completed(self) -> bool:
        """Ended cleanly and was not cancelled on purpose: its latencies are a full answer's."""
        return self.error is None and self.cancelled_at is None

    @property
    def e2e(self) -> float:
        return self.ended - self.started

    @property
    def tpot(self) -> float | None:
        if self.ttft is None or self.tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.tokens - 1)


class _Reader:
    """Consumes one response body: decodes events, times tokens, and stops at the plan's N."""

    def __init__(self, api: Api, result: Result, stop_after: int | None) -> None:
        self.api = api
        self.result = result
        self.decoder = SSEDecoder()
        self.text: list[str] = []
        self.seqs: list[int] = []
        self.stop_after = stop_after
        self.connection: Connection | None = None
        self.ending: str | None = None  # "done" or an error type
        self.stopped = False
        self.first_event_at: float | None = None
        self._last_token_at: float | None = None
        self.error_body = bytearray()
        self._inflate: Any = None  # zlib's decompressor, for a gzip-encoded stream

    def new_response(self, connection: Connection) -> None:
        self.connection = connection
        self._inflate = None

    def on_body(self, chunk: bytes, read_at: float) -> None:
        if self.connection is not None and self.connection.status != 200:
            if len(self.error_body) < _ERROR_BODY_LIMIT:  # an error answer: kept to be named
                self.error_body += chunk
            return
        if self.stopped:
            return
        if (
            self.connection is not None
            and self.connection.headers.get("content-encoding") == "gzip"
        ):
            if self._inflate is None:
                self._inflate = zlib.decompressobj(wbits=31)
            chunk = self._inflate.decompress(chunk)
        tokens_in_read = 0
        for event in self.decoder.feed(chunk):
            if self.first_event_at is None:
                self.first_event_at = read_at
            reading = dialects.read(self.api, event)
            if reading.kind == "token":
                tokens_in_read += 1
                self._token(reading.value, read_at, event.id)
            elif reading.kind == "start":
                self.result.stream_id = reading.value
            elif reading.kind in ("done", "error"):
                self.ending = "done" if reading.kind == "done" else reading.value
            if self.stop_after is not None and self.result.tokens >= self.stop_after:
                self.stopped = True
                break
        if tokens_in_read:
            self.result.reads += 1
        if self.stopped and self.connection is not None:
            self.connection.abort()

    def _token(self, text: str, read_at: float, event_id: str) -> None:
        result = self.result
        if result.ttft is None:
            result.ttft = read_at - result.started
        elif self._last_token_at is not None:
            result.gaps.append(read_at - self._last_token_at)
        self._last_token_at = read_at
        result.tokens += 1
        self.text.append(text)
        seq = event_id.rpartition(":")[2]
        if seq.isdigit():
            self.seqs.append(int(seq))


async def _exchange(
    pool: Pool, head: bytes, body: bytes, reader: _Reader, time_limit: float
) -> str | None:
    """Send one request and read its response; the error type, or None for a clean end."""
    try:
        connection = await pool.acquire()
    except (OSError, TimeoutError):
        return "connect_error"
    reader.new_response(connection)
    try:
        async with asyncio.timeout(time_limit):
            await connection.send(head, body, reader.on_body)
            await connection.finished()
    except TimeoutError:
        connection.abort()
        return "timeout"
    except ConnectionError:
        if reader.stopped:
            return None
        return "connection_closed" if connection.status else "closed_before_headers"
    finally:
        pool.release(connection)
    if connection.status != 200:
        return dialects.error_type_of(connection.status, bytes(reader.error_body))
    return None


async def run_request(
    pool: Pool, api: Api, plan: Plan, max_tokens: int, time_limit: float
) -> Result:
    path, body = dialects.request(
        api, plan.model, plan.prompt, max_tokens, detach=plan.drop_after is not None
    )
    head = pool.request_head("POST", path, body)
    result = Result(time.perf_counter(), tag=plan.tag)
    stop_after = plan.cancel_after if plan.cancel_after is not None else plan.drop_after
    reader = _Reader(api, result, stop_after)
    result.error = await _exchange(pool, head, body, reader, time_limit)
    if result.error is None and reader.stopped:
        if plan.cancel_after is not None:
            result.cancelled_at = time.time()
        else:
            await _resume(pool, reader, time_limit)
    elif result.error is None and reader.ending != "done":
        result.error = reader.ending or "incomplete"
    result.ended = time.perf_counter()
    return result


async def _resume(pool: Pool, reader: _Reader, time_limit: float) -> None:
    """Reconnect with the last event id, read to the end, and check the text is exact."""
    result = reader.result
    dropped_at = time.perf_counter()
    if not result.stream_id or not reader.seqs:
        result.error = "drop_before_stream_id"
        return
    last_id = f"{result.stream_id}:{reader.seqs[-1]}"
    head = pool.request_head(
        "GET", f"/api/streams/{result.stream_id}", b"", {"Last-Event-ID": last_id}
    )
    reader.stop_after, reader.stopped, reader.first_event_at = None, False, None
    error = await _exchange(pool, head, b"", reader, time_limit)
    if reader.first_event_at is not None:
        result.resume_latency = reader.first_event_at - dropped_at
    if error is not None or reader.ending != "done":
        result.error = f"resume_{error or reader.ending or 'incomplete'}"
        return
    replayed = await replay_text(pool, result.stream_id, time_limit)
    in_order = all(a < b for a, b in zip(reader.seqs, reader.seqs[1:], strict=False))
    result.exact = replayed == "".join(reader.text) and in_order
    if not result.exact:
        result.error = "resume_not_exact"


async def replay_text(pool: Pool, stream_id: str, time_limit: float) -> str | None:
    """The whole answer as the server's log holds it (a replay from before the first event)."""
    head = pool.request_head(
        "GET", f"/api/streams/{stream_id}", b"", {"Last-Event-ID": f"{stream_id}:0"}
    )
    reader = _Reader("native", Result(time.perf_counter()), None)
    if await _exchange(pool, head, b"", reader, time_limit) is not None:
        return None
    return "".join(reader.text)
