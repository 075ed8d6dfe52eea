"""The upstream transports side by side: CPU per request and per token, http1 against httpx.

Both read the same `tokenrelay mock-upstream` (OpenAI format) through `UpstreamProvider`, in
this process under uvloop: deltas pulled (`stream`), and for http1 also pushed from the
network reads (`stream_into`, the path a server's stream takes). CPU is this process's own
(the mock runs in another), so the figure is the transport plus the wire decoding and nothing
else. The mock paces tokens at 200/s, so each arrives in its own network read, as a real
model's do. Short answers show the cost per request, long ones add the cost per token.

    .venv/bin/python -m benchmarks.bench_upstream --requests 1000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from contextlib import aclosing
from pathlib import Path

import uvloop
from tests.realserver import mock_upstream

from tokenrelay.providers.base import Delta, GenerationRequest, Message
from tokenrelay.providers.openai import OpenAIProvider
from tokenrelay.providers.upstream import Transport

# (label, transport, pushed): httpx cannot push (it would fall back to pulling).
VARIANTS: tuple[tuple[str, Transport, bool], ...] = (
    ("http1", "http1", False),
    ("http1 push", "http1", True),
    ("httpx", "httpx", False),
)


def _ignore(delta: Delta) -> None:
    pass


async def cpu_per_request(
    url: str, transport: Transport, pushed: bool, requests: int, tokens: int, concurrency: int
) -> float:
    provider = OpenAIProvider("openai", f"{url}/v1", "sk-bench", [], transport=transport)
    request = GenerationRequest("default", (Message("user", "Explain relays"),), max_tokens=tokens)
    slots = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with slots:
            if pushed:
                await provider.stream_into(request, _ignore)
                return
            async with aclosing(provider.stream(request)) as deltas:
                async for _ in deltas:
                    pass

    await one()  # a warm connection, as a running server has
    started = time.process_time()
    await asyncio.gather(*(one() for _ in range(requests)))
    spent = time.process_time() - started
    await provider.aclose()
    return spent / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, mock_upstream(Path(tmp), ttft=0.0, tps=200) as mock:
        figures: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.rounds):
            for tokens in (20, 200):
                for label, transport, pushed in VARIANTS:
                    count = args.requests if tokens == 20 else args.requests // 4
                    cost = uvloop.run(
                        cpu_per_request(
                            mock.url, transport, pushed, count, tokens, args.concurrency
                        )
                    )
                    figures.setdefault((label, tokens), []).append(cost)
        for label, _, _ in VARIANTS:
            short = statistics.median(figures[(label, 20)])
            long = statistics.median(figures[(label, 200)])
            per_token = (long - short) / 180
            print(
                f"{label:10} {short:8.0f} µs per 20-token request"
                f"   {long:8.0f} µs per 200-token request   {per_token:5.1f} µs per extra token"
            )


if __name__ == "__main__":
    main()
