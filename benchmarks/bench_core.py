"""Core relay cost: N concurrent `sim/fast` streams of T tokens against a real server.

Prints server CPU microseconds per token (user + system time from /proc/<pid>/stat, so the
load generator's own CPU is not counted), peak RSS (VmHWM) and client-side figures. The
server is one `tokenrelay serve` worker; the load generator runs in this process.

    .venv/bin/python -m benchmarks.bench_core --streams 200 --tokens 200 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
from tests.realserver import real_server

from tokenrelay.bench.procwatch import cpu_seconds
from tokenrelay.sse import SSEDecoder


def memory_kib(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


@dataclass
class StreamResult:
    tokens: int
    ttft: float
    ended: str


async def one_stream(client: httpx.AsyncClient, tokens: int, model: str) -> StreamResult:
    body = {"message": "Explain streaming relays", "model": model, "max_tokens": tokens}
    started = time.perf_counter()
    ttft = 0.0
    count = 0
    ending = ""
    decoder = SSEDecoder()
    async with client.stream("POST", "/api/chat/stream", json=body) as response:
        async for chunk in response.aiter_raw():
            for event in decoder.feed(chunk):
                kind = orjson.loads(event.data)["type"]
                if kind == "token":
                    count += 1
                    ttft = ttft or time.perf_counter() - started
                elif kind in ("done", "error", "cancelled"):
                    ending = kind
    return StreamResult(count, ttft, ending)


async def one_round(
    url: str, streams: int, tokens: int, model: str = "sim/fast+endless"
) -> tuple[list[StreamResult], float]:
    limits = httpx.Limits(max_connections=streams, max_keepalive_connections=streams)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(one_stream(client, tokens, model) for _ in range(streams)))
        return list(results), time.perf_counter() - started


def load_arguments(doc: str) -> argparse.Namespace:
    """--streams, --tokens, --rounds: the load shape every log/core benchmark takes."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


def main() -> None:
    args = load_arguments(__doc__)
    with tempfile.TemporaryDirectory() as tmp, real_server(Path(tmp)) as server:
        pid = server.process.pid
        idle_rss = memory_kib(pid)["VmRSS"]
        asyncio.run(one_round(server.url, 10, args.tokens))  # warm-up
        print(
            f"{args.streams} streams x {args.tokens} tokens, sim/fast, "
            f"1 worker, {args.rounds} rounds"
        )
        per_token = []
        for n in range(1, args.rounds + 1):
            cpu_before = cpu_seconds([pid])
            results, wall = asyncio.run(one_round(server.url, args.streams, args.tokens))
            cpu = cpu_seconds([pid]) - cpu_before
            total = sum(r.tokens for r in results)
            bad = [r for r in results if r.ended != "done" or r.tokens != args.tokens]
            us = cpu * 1e6 / total
            per_token.append(us)
            ttfts = sorted(r.ttft * 1000 for r in results)
            print(
                f"round {n}: {total} tokens in {wall:.2f}s wall; server CPU {cpu:.2f}s = "
                f"{us:.1f} us/token; TTFT p50 {ttfts[len(ttfts) // 2]:.0f} ms "
                f"p95 {ttfts[int(len(ttfts) * 0.95)]:.0f} ms; incomplete streams {len(bad)}"
            )
        mem = memory_kib(pid)
        print(
            f"server CPU per token: median {statistics.median(per_token):.1f} us "
            f"(min {min(per_token):.1f}); RSS idle {idle_rss / 1024:.1f} MiB, "
            f"now {mem['VmRSS'] / 1024:.1f} MiB, peak {mem['VmHWM'] / 1024:.1f} MiB "
            f"(finished streams stay in the log for the TTL)"
        )


if __name__ == "__main__":
    main()
