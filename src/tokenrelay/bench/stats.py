"""A phase's results as figures: latency percentiles, rates, errors, costs, and verdicts.

Everything here is plain data (dicts of numbers and strings) so `--json` prints it as is and
the table and the HTML report read the same numbers.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from tokenrelay.bench.load import Phase
from tokenrelay.bench.request import Result

QUANTILES = (("p50", 0.50), ("p90", 0.90), ("p95", 0.95), ("p99", 0.99))
GENERATOR_SATURATED = 0.9  # of one core: past this the generator, not the server, sets the pace
BURST_TOKENS_PER_READ = 8.0  # paced tokens arriving this many to a read were held somewhere
PACED_SPAN = 0.2  # seconds from request to last token before a stream's reads are judged


def distribution(values: list[float], scale: float = 1000.0) -> dict[str, float] | None:
    """Nearest-rank percentiles, max and mean, scaled (seconds to ms by default)."""
    if not values:
        return None
    ordered = sorted(values)
    figures = {
        name: ordered[max(0, math.ceil(q * len(ordered)) - 1)] * scale for name, q in QUANTILES
    }
    figures["max"] = ordered[-1] * scale
    figures["mean"] = sum(ordered) / len(ordered) * scale
    return {name: round(value, 3) for name, value in figures.items()}


def bursts(results: list[Result]) -> dict[str, Any]:
    """Did an intermediary hold tokens back and release them in bursts?

    A stream is judged only if it took at least `PACED_SPAN` from request to end: an upstream
    with no delay legitimately delivers a short answer in a few reads. (Judging by the gaps
    between tokens would miss the worst case, a stream held whole until its end.)
    """
    judged = bursty = 0
    reads = tokens = 0
    for result in results:
        if result.reads and result.e2e >= PACED_SPAN:
            judged += 1
            reads += result.reads
            tokens += result.tokens
            bursty += result.tokens / result.reads >= BURST_TOKENS_PER_READ
    return {
        "streams_judged": judged,
        "tokens_per_read": round(tokens / reads, 2) if reads else None,
        "buffering_detected": judged > 0 and bursty * 2 >= judged,
    }


def summarize(phase: Phase) -> dict[str, Any]:
    results = phase.results
    completed = [r for r in results if r.completed]
    cancelled = [r for r in results if r.cancelled_at is not None]
    dropped = [r for r in results if r.resume_latency is not None or r.exact is not None]
    tokens = sum(r.tokens for r in results)
    wall = phase.wall or math.inf
    summary: dict[str, Any] = {
        "phase": phase.label,
        "concurrency": phase.concurrency,
        "rate": phase.rate,
        "began_at_seconds": round(phase.began_at, 3),  # on the report's timeline
        "wall_seconds": round(phase.wall, 3),
        "requests": len(results),
        "completed": len(completed),
        "errors": dict(Counter(r.error for r in results if r.error is not None)),
        "output_tokens": tokens,
        "output_tokens_per_second": round(tokens / wall, 1),
        "requests_per_second": round(len(completed) / wall, 2),
        "ttft_ms": distribution([r.ttft for r in results if r.ttft is not None]),
        "itl_ms": distribution([gap for r in completed for gap in r.gaps]),
        "tpot_ms": distribution([t for r in completed if (t := r.tpot) is not None]),
        "e2e_ms": distribution([r.e2e for r in completed]),
        "bursts": bursts(completed),
        "generator": _generator(phase),
        "server": _server(phase, tokens, len(results)),
    }
    if cancelled:
        summary["cancel"] = {"cancelled": len(cancelled), **phase.upstream}
    if dropped:
        summary["drop"] = {
            "dropped": len(dropped),
            "exact": sum(1 for r in dropped if r.exact),
            "not_exact": sum(1 for r in dropped if r.exact is False),
            "resume_ms": distribution([r.resume_latency for r in dropped if r.resume_latency]),
        }
    return summary


def _generator(phase: Phase) -> dict[str, Any]:
    load = phase.generator_cpu / phase.wall if phase.wall else 0.0
    return {
        "cpu_seconds": round(phase.generator_cpu, 3),
        "cpu_share_of_one_core": round(load, 3),
        "saturated": load >= GENERATOR_SATURATED,
    }


def _server(phase: Phase, tokens: int, requests: int) -> dict[str, Any]:
    samples = phase.samples
    figures: dict[str, Any] = {
        "max_connections": max((s.connections for s in samples), default=0),
    }
    if phase.server_cpu is not None:
        figures["cpu_seconds"] = round(phase.server_cpu, 3)
        figures["cpu_us_per_token"] = round(phase.server_cpu * 1e6 / tokens, 2) if tokens else None
        figures["cpu_us_per_request"] = (
            round(phase.server_cpu * 1e6 / requests, 1) if requests else None
        )
        figures["rss_mib_max"] = round(max((s.rss_bytes for s in samples), default=0) / 2**20, 1)
    return figures
