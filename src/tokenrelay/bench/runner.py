"""`tokenrelay bench`: run the phases, watch the server, verify cancels, return the figures."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from tokenrelay.bench.connection import Pool
from tokenrelay.bench.load import Options, Phase, run_phase
from tokenrelay.bench.procwatch import Sample, Watch, command_line
from tokenrelay.bench.request import Result
from tokenrelay.bench.stats import summarize
from tokenrelay.bench.upstream import verify_cancels


class OptionsError(ValueError):
    """Options that cannot work together; the message says which and why."""


def check(options: Options) -> None:
    if options.duration is None and options.requests is None:
        raise OptionsError("give --duration or --requests")
    if options.drop_rate and options.api != "native":
        raise OptionsError("--drop-rate needs --api native: only it can resume a stream")
    if not 0 <= options.cancel_rate <= 1 or not 0 <= options.drop_rate <= 1:
        raise OptionsError("--cancel-rate and --drop-rate are fractions between 0 and 1")
    if options.cancel_rate + options.drop_rate > 1:
        raise OptionsError("--cancel-rate plus --drop-rate cannot exceed 1")
    if urlsplit(options.url).scheme != "http":
        raise OptionsError("the URL must be http://host:port (the load tester does not do TLS)")


async def find_server_pid(url: str) -> int:
    """`--server-pid auto`: the pid the server's `/healthz` names, once it is a tokenrelay
    process on this machine. A server elsewhere, or in a container, names a pid that here
    belongs to another process, or to none: its figures would be another process's."""
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.get(f"{url}/healthz")
        pid = answer.json().get("pid")
    except (httpx.HTTPError, ValueError, AttributeError):
        pid = None
    if not isinstance(pid, int) or isinstance(pid, bool) or pid < 1:
        raise OptionsError(
            f"--server-pid auto: {url}/healthz names no pid (is it tokenrelay, and up?);"
            " pass --server-pid PID"
        )
    if "tokenrelay" not in (command_line(pid) or ""):
        raise OptionsError(
            f"--server-pid auto: /healthz names pid {pid}, which is no tokenrelay process on"
            " this machine (is the server on another host, or in a container?); pass"
            " --server-pid PID of a process here"
        )
    return pid


async def prepared(options: Options) -> Options:
    """The options checked, with `--server-pid auto` resolved to a number."""
    check(options)
    if options.server_pid == "auto":
        return dataclasses.replace(options, server_pid=await find_server_pid(options.url))
    return options


def phases_of(options: Options) -> list[Phase]:
    if options.rate is not None:
        return [Phase(f"{options.rate:g}/s", None, options.rate)]
    return [Phase(f"c={c}", c, None) for c in options.concurrency]


PhaseStarted = Callable[[Phase], None]
RequestDone = Callable[[Phase, Result], None]


async def run(
    options: Options,
    on_phase: PhaseStarted = lambda phase: None,
    on_result: RequestDone = lambda phase, result: None,
) -> dict[str, Any]:
    options = await prepared(options)
    assert options.server_pid != "auto"
    pool = Pool(options.url)
    watch = Watch(options.server_pid, pool.port)
    watch.start()
    summaries = []
    try:
        for phase in phases_of(options):
            on_phase(phase)
            await run_phase(options, phase, pool, watch, _bound(on_result, phase))
            pool.close()  # the next phase starts from cold connections, like the first
            if options.upstream:
                phase.upstream = await verify_cancels(options.upstream, phase.results)
            summaries.append((phase, summarize(phase)))
    finally:
        await watch.stop()
        pool.close()
    return {
        "target": {
            "url": options.url,
            "api": options.api,
            "model": options.model,
            "server_pid": options.server_pid,
        },
        "load": {
            "prompts": "fixed" if options.prompt is not None else "varied",
            "seed": options.seed,
            "max_tokens": options.max_tokens,
            "duration": options.duration,
            "requests": options.requests,
            "ramp_up": options.ramp_up,
            "cancel_after_tokens": options.cancel_after,
            "cancel_rate": options.cancel_rate,
            "drop_rate": options.drop_rate,
        },
        "phases": [summary for _, summary in summaries],
        "timeline": [_sample(s) for s in watch.samples],
        "raw": {
            phase.label: {
                "ttft_ms": [round(r.ttft * 1000, 3) for r in phase.results if r.ttft is not None],
                "e2e_ms": [round(r.e2e * 1000, 3) for r in phase.results if r.completed],
            }
            for phase, _ in summaries
        },
    }


def _bound(on_result: RequestDone, phase: Phase) -> Callable[[Result], None]:
    return lambda result: on_result(phase, result)


def _sample(sample: Sample) -> dict[str, float]:
    return {
        "t": round(sample.at, 3),
        "cpu_seconds": round(sample.cpu_seconds, 3),
        "rss_mib": round(sample.rss_bytes / 2**20, 1),
        "connections": sample.connections,
    }


def run_sync(options: Options, **callbacks: Any) -> dict[str, Any]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.run(run(options, **callbacks))
    return uvloop.run(run(options, **callbacks))
