"""What an ended stream keeps for its TTL in the memory log, against its payloads' own bytes.

A replica keeps every answer it served in the last `ttl` (10 minutes) for resumes, so this is
most of a busy replica's memory. Creates `--streams` streams in a `MemoryStreamLog`, appends a
start, `--tokens` tokens and a terminal event to each, and measures with tracemalloc what
remains, per stream, and how long retiring one takes.

    .venv/bin/python -m benchmarks.bench_ended --tokens 200
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
import tracemalloc

from tokenrelay.events import Event, cancelled_event, start_event, token_event
from tokenrelay.streams.log import StreamMeta
from tokenrelay.streams.log_memory import MemoryStreamLog


async def fill(log: MemoryStreamLog, n: int, tokens: int) -> tuple[str, Event, int]:
    """A stream with a start and `tokens` tokens; its id, its terminal event and payload bytes."""
    sid = f"str_ended{n:012d}"
    await log.create(sid, StreamMeta(sid, "openai/default"))
    events = [start_event(1, sid, "openai/default")]
    events += [token_event(seq, f" word{seq % 50}") for seq in range(2, tokens + 2)]
    for event in events:
        log.append_nowait(sid, event)
    end = cancelled_event(tokens + 2, "done")
    return sid, end, sum(len(event.data) for event in events) + len(end.data)


async def kept_per_stream(streams: int, tokens: int) -> tuple[float, float]:
    """Bytes kept per ended stream, and its payloads' bytes."""
    log = MemoryStreamLog(max_bytes=1 << 30, ttl=600.0)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    payloads = 0
    for n in range(streams):
        sid, end, size = await fill(log, n, tokens)
        log.append_nowait(sid, end)  # retires the stream
        payloads += size
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    kept = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return kept / streams, payloads / streams


async def retire_time(streams: int, tokens: int) -> float:
    """µs to append the terminal event, which retires the stream (no tracemalloc)."""
    log = MemoryStreamLog(max_bytes=1 << 30, ttl=600.0)
    elapsed = 0.0
    for n in range(streams):
        sid, end, _ = await fill(log, n, tokens)
        started = time.perf_counter()
        log.append_nowait(sid, end)
        elapsed += time.perf_counter() - started
    return elapsed / streams * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--tokens", type=int, default=200)
    args = parser.parse_args()
    kept, payloads = asyncio.run(kept_per_stream(args.streams, args.tokens))
    retiring = asyncio.run(retire_time(args.streams, args.tokens))
    print(
        f"{args.tokens}-token answers: {kept:,.0f} B kept per ended stream, "
        f"{kept / payloads:.2f}x its {payloads:,.0f} B of payloads; "
        f"retiring one (the terminal append) takes {retiring:.1f} µs"
    )


if __name__ == "__main__":
    main()
