"""Load shapes: closed loop at fixed concurrency, and open loop with Poisson arrivals.

    closed   `concurrency` virtual users, each sending its next request when the last ends.
             Sweeps run one phase per level (`--concurrency 1,10,100`).
    open     requests arrive at `rate` per second with exponential gaps, whether or not
             earlier ones have finished, so a slow server shows up as queueing and rising
             latency instead of quietly lowering the offered load.

A phase ends after `duration` seconds or `requests` requests (whichever is given; requests
still running then are awaited). `ramp_up` spreads the users' first requests (closed) or
raises the rate linearly (open) over that many seconds.

Every phase starts from the same `seed`: it asks the same questions (prompts.py) and, in an
open loop, draws the same arrival gaps, so the phases of a sweep and two runs with one seed
differ only in the load.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

from tokenrelay.bench.connection import Pool
from tokenrelay.bench.dialects import Api
from tokenrelay.bench.procwatch import Sample, Watch, own_cpu_seconds
from tokenrelay.bench.prompts import Prompts, seeded
from tokenrelay.bench.request import Plan, Result, run_request


@dataclass(frozen=True, slots=True)
class Options:
    url: str
    api: Api = "native"
    model: str = "sim/default"
    prompt: str | None = None  # None: a different question per request (prompts.py)
    max_tokens: int = 200
    concurrency: tuple[int, ...] = (10,)
    rate: float | None = None
    duration: float | None = None
    requests: int | None = None
    ramp_up: float = 0.0
    cancel_after: int | None = None
    cancel_rate: float = 0.0
    drop_rate: float = 0.0
    upstream: str | None = None  # a `tokenrelay mock-upstream`, to verify cancels reached it
    server_pid: int | Literal["auto"] | None = None  # auto: the pid /healthz names (runner.py)
    timeout: float = 120.0
    seed: int = 0  # the questions, the arrival gaps, and which requests are cancelled


@dataclass(slots=True)
class Phase:
    label: str  # "concurrency 10" or "rate 5/s"
    concurrency: int | None
    rate: float | None
    results: list[Result] = field(default_factory=list)
    began_at: float = 0.0  # on the watch's clock: where the phase starts on the timeline
    wall: float = 0.0
    generator_cpu: float = 0.0
    server_cpu: float | None = None
    samples: list[Sample] = field(default_factory=list)
    upstream: dict[str, object] = field(default_factory=dict)  # cancel verification


class Planner:
    """Decides per request what it asks, whether it is cancelled or dropped, and after how
    many tokens."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.prompts = Prompts(options.seed, options.prompt)
        self.random = seeded(options.seed, "cancels")

    def next(self) -> Plan:
        o = self.options
        tag = secrets.token_hex(6) if o.upstream else ""
        model = f"{o.model}+tag-{tag}" if tag else o.model
        prompt = self.prompts.next()
        if o.cancel_rate and self.random.random() < o.cancel_rate:
            after = o.cancel_after or self.random.randint(1, max(1, o.max_tokens // 2))
            return Plan(model, prompt, cancel_after=after, tag=tag)
        if o.drop_rate and self.random.random() < o.drop_rate:
            drop_after = self.random.randint(1, max(1, o.max_tokens - 1))
            return Plan(model, prompt, drop_after=drop_after, tag=tag)
        return Plan(model, prompt, tag=tag)


Progress = Callable[[Result], None]


async def run_phase(
    options: Options, phase: Phase, pool: Pool, watch: Watch, progress: Progress
) -> None:
    planner = Planner(options)
    start = watch.sample()
    cpu_before, server_before, phase.began_at = own_cpu_seconds(), start.cpu_seconds, start.at
    began = time.perf_counter()
    first_sample = len(watch.samples)

    async def one() -> None:
        result = await run_request(
            pool, options.api, planner.next(), options.max_tokens, options.timeout
        )
        phase.results.append(result)
        progress(result)

    if phase.rate is not None:
        await _open_loop(options, phase.rate, began, one)
    else:
        assert phase.concurrency is not None
        await _closed_loop(options, phase.concurrency, began, one)
    phase.wall = time.perf_counter() - began
    phase.generator_cpu = own_cpu_seconds() - cpu_before
    last = watch.sample()
    if options.server_pid:
        phase.server_cpu = last.cpu_seconds - server_before
    phase.samples = watch.samples[first_sample:]


def _budget(options: Options, began: float, launched: int) -> bool:
    """May another request start? (`duration` and/or `requests`, whichever comes first)."""
    if options.requests is not None and launched >= options.requests:
        return False
    return options.duration is None or time.perf_counter() - began < options.duration


async def _closed_loop(
    options: Options, users: int, began: float, one: Callable[[], Awaitable[None]]
) -> None:
    launched = 0

    async def user(index: int) -> None:
        nonlocal launched
        if options.ramp_up:
            await asyncio.sleep(options.ramp_up * index / users)
        while _budget(options, began, launched):
            launched += 1
            await one()

    await asyncio.gather(*(user(i) for i in range(users)))


async def _open_loop(
    options: Options, rate: float, began: float, one: Callable[[], Coroutine[Any, Any, None]]
) -> None:
    rng = seeded(options.seed, "arrivals")
    running: set[asyncio.Task[None]] = set()
    launched = 0
    while _budget(options, began, launched):
        elapsed = time.perf_counter() - began
        current = rate * min(1.0, elapsed / options.ramp_up) if options.ramp_up else rate
        await asyncio.sleep(rng.expovariate(max(current, rate / 100)))
        if not _budget(options, began, launched):
            break
        launched += 1
        task = asyncio.create_task(one())
        running.add(task)
        task.add_done_callback(running.discard)
    await asyncio.gather(*running)
