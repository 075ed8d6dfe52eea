"""Metrics summed across `tokenrelay serve --workers N`: a scrape answers for the replica, not
for whichever worker took it.

prometheus_client's multiprocess mode would do this with its own metric classes, whose
`inc()` and `observe()` take a lock and write a memory-mapped file on every call: a cost per
token that `metrics.py` exists to avoid. So each worker keeps its plain counters, and once a
second writes a snapshot of them (`<pid>.json`, replaced atomically) into a directory that
`serve` makes for its workers ($TOKENRELAY_METRICS_DIR). A scrape sums the snapshots: the
answering worker's own counters live, the others' at most a second old. A worker that has
exited keeps its counters in the sum (a counter must not go down), but not its gauges.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import orjson

from tokenrelay.metrics import CLOSE_BUCKETS, Histogram, Metrics

DIRECTORY_ENV = "TOKENRELAY_METRICS_DIR"
EVERY = 1.0  # seconds between snapshots
_GAUGES = ("active_streams", "active_subscribers", "ended_bytes")
_COUNTERS = ("tokens", "resumes", "ended_evicted")
_LABELLED = (
    "key_requests",
    "key_streams",
    "key_tokens",
    "streams",
    "cancellations",
    "retries",
    "upstream_requests",
)
_SEPARATOR = "\x1f"


def directory() -> Path | None:
    value = os.environ.get(DIRECTORY_ENV)
    return Path(value) if value else None


def snapshot(m: Metrics) -> dict[str, Any]:
    def keyed(table: dict[Any, int]) -> dict[str, int]:
        return {_SEPARATOR.join(k) if isinstance(k, tuple) else k: v for k, v in table.items()}

    return {
        **{name: getattr(m, name) for name in (*_GAUGES, *_COUNTERS)},
        **{name: keyed(getattr(m, name)) for name in _LABELLED},
        "ttft": [m.ttft.counts, m.ttft.total],
        "token_gap": [m.token_gap.counts, m.token_gap.total],
        "cancel_close": {phase: [h.counts, h.total] for phase, h in m.cancel_close.items()},
    }


def _add_histogram(into: Histogram, data: list[Any]) -> None:
    counts, total = data
    if len(counts) == len(into.counts):
        into.counts = [a + b for a, b in zip(into.counts, counts, strict=True)]
        into.total += total


def add(into: Metrics, data: dict[str, Any], *, live: bool) -> None:
    """Sum a snapshot into `into`; a dead worker's gauges are left out."""
    for name in _COUNTERS + (_GAUGES if live else ()):
        setattr(into, name, getattr(into, name) + int(data.get(name, 0)))
    for name in _LABELLED:
        table = getattr(into, name)
        for joined, value in (data.get(name) or {}).items():
            parts = joined.split(_SEPARATOR)
            key = parts[0] if name in ("key_requests", "retries") else tuple(parts)
            table[key] = table.get(key, 0) + value
    _add_histogram(into.ttft, data.get("ttft") or [[], 0])
    _add_histogram(into.token_gap, data.get("token_gap") or [[], 0])
    for phase, histogram in (data.get("cancel_close") or {}).items():
        _add_histogram(into.cancel_close.setdefault(phase, Histogram(CLOSE_BUCKETS)), histogram)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def summed(own: Metrics, where: Path) -> Metrics:
    """This worker's metrics, live, plus every other worker's last snapshot."""
    total = Metrics()
    add(total, snapshot(own), live=True)
    me = os.getpid()
    for path in where.glob("*.json"):
        with contextlib.suppress(ValueError, OSError, orjson.JSONDecodeError):
            pid = int(path.stem)
            if pid != me:
                add(total, orjson.loads(path.read_bytes()), live=_alive(pid))
    return total


def write(m: Metrics, where: Path) -> None:
    target = where / f"{os.getpid()}.json"
    temporary = where / f".{os.getpid()}.tmp"
    temporary.write_bytes(orjson.dumps(snapshot(m)))
    os.replace(temporary, target)


async def keep_writing(m: Metrics, where: Path) -> None:
    """Write this worker's snapshot every EVERY seconds, until cancelled (and once more)."""
    try:
        while True:
            with contextlib.suppress(OSError):
                write(m, where)
            await asyncio.sleep(EVERY)
    finally:
        with contextlib.suppress(OSError):
            write(m, where)
