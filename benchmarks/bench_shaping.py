"""What shaping costs: one ~20,000-token answer relayed as plain tokens, in words, as JSON.

In-process and deterministic: a provider replays the same tokenized JSON text (the sim's
tokenizer over a schema-shaped answer with a long array), yielding to the event loop after
every token as a network read would. Each run is a real `Stream` writing to the memory log
and a subscriber reading it in batches and encoding SSE, as the server does; only the socket
is missing, which makes the ratios stricter (the denominator is smaller than a server's).
`max_hold_ms` is 0, so `json` partials are limited by the byte budget alone (the most that
can be sent), not by time. Modes alternate; figures are CPU time (process_time), median.

    .venv/bin/python -m benchmarks.bench_shaping --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncGenerator
from typing import Any

import uvloop

from tokenrelay.events import Event
from tokenrelay.providers.base import Delta, GenerationRequest, Provider
from tokenrelay.providers.content import Message
from tokenrelay.providers.sim_text import compose_json, tokenize
from tokenrelay.settings import StreamsSection
from tokenrelay.shaping.shaper import Shaping
from tokenrelay.streams.log import StreamMeta
from tokenrelay.streams.log_memory import MemoryStreamLog
from tokenrelay.streams.stream import Stream
from tokenrelay.streams.subscription import Subscription
from tokenrelay.wire.native import NativeEncoder

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "steps": {"type": "array", "items": {"type": "string"}, "minItems": 1700},
        "rating": {"type": "integer"},
    },
}


class Replay(Provider):
    name = "replay"

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens

    def models(self) -> list[str]:
        return ["replay"]

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        for token in self.tokens:
            yield Delta(token)
            await asyncio.sleep(0)
        yield Delta(finish_reason="stop")


async def relay(tokens: list[str], shaping: Shaping | None) -> tuple[float, dict[str, int]]:
    log = MemoryStreamLog(max_bytes=256 * 1024 * 1024, ttl=60)
    await log.create("s", StreamMeta("s", "replay"))
    request = GenerationRequest("replay", (Message("user", "plan"),))
    limits = StreamsSection(max_retries=0)
    stream = Stream("s", "replay", Replay(tokens), request, log, limits, shaping=shaping)
    encoder = CountingEncoder()
    reader = Subscription(log, "s", 0, encoder, Discard(), keepalive=15, send_timeout=30)
    started = time.process_time()
    await asyncio.gather(stream.run(), reader.run())
    return time.process_time() - started, encoder.counts


class CountingEncoder(NativeEncoder):
    """The native wire form, counting the events it renders by type."""

    def __init__(self) -> None:
        super().__init__("s")
        self.counts: dict[str, int] = {}

    def encode_one(self, event: Event) -> bytes:
        self.counts[event.type] = self.counts.get(event.type, 0) + 1
        return super().encode_one(event)


class Discard:
    """A writer to nowhere: the socket is all this benchmark leaves out."""

    def write_now(self, data: bytes) -> bool:
        return True

    async def drain(self) -> None:
        return


def answer(items: int) -> tuple[str, list[str], dict[str, Any]]:
    schema = {**SCHEMA, "properties": {**SCHEMA["properties"]}}
    schema["properties"]["steps"] = {**SCHEMA["properties"]["steps"], "minItems": items}
    text = compose_json("Plan a TCP handshake lesson", {"json_schema": {"schema": schema}})
    return text, tokenize(text, "bench"), schema


def linearity(rounds: int) -> None:
    """JSON cost per token at three answer lengths: flat if parsing is linear overall."""
    print("json partials, cost per token by answer length (flat = linear in the answer):")
    for items in (425, 1700, 6800):
        _, tokens, schema = answer(items)
        shaping = Shaping(json=True, schema=schema, max_hold=0.0)
        figures = [uvloop.run(relay(tokens, shaping))[0] for _ in range(rounds)]
        per_token = statistics.median(figures) * 1e6 / len(tokens)
        print(f"  {len(tokens):7,} tokens  {per_token:5.1f} us/token")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    text, tokens, _ = answer(1700)
    modes: dict[str, Shaping | None] = {
        "plain tokens": None,
        "word chunking": Shaping(chunking="word", max_hold=0.05),
        "json partials": Shaping(json=True, schema=SCHEMA, max_hold=0.0),
    }
    cpu: dict[str, list[float]] = {name: [] for name in modes}
    counts: dict[str, dict[str, int]] = {}
    for _ in range(args.rounds + 1):  # the first round warms up
        for name, shaping in modes.items():
            seconds, counts[name] = uvloop.run(relay(tokens, shaping))
            cpu[name].append(seconds)
    plain = statistics.median(cpu["plain tokens"][1:])
    print(f"{len(tokens):,} tokens, {len(text):,} characters of JSON, {args.rounds} rounds")
    for name, figures in cpu.items():
        median = statistics.median(figures[1:])
        shown = ", ".join(f"{k} {v}" for k, v in sorted(counts[name].items()))
        print(
            f"  {name:14s} {median * 1000:7.1f} ms = {median * 1e6 / len(tokens):5.1f} us/token"
            f"  ({median / plain:4.2f}x plain)  events: {shown}"
        )
    linearity(args.rounds)


if __name__ == "__main__":
    main()
