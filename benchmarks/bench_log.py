"""What durability costs per token: the memory log and the Redis log against no log at all.

Same load for each (N concurrent `sim/fast` streams of T tokens): a direct relay with no log
(benchmarks/direct_relay.py), tokenrelay with its memory log, tokenrelay with the Redis log.
For Redis, redis-server's own CPU is counted too. One process each, uvloop + httptools.
The direct relay and the memory log run side by side and take rounds in turns: on a shared
2-core machine one round can cost 50% more than the next, and the drift then hits both alike.

    .venv/bin/python -m benchmarks.bench_log --streams 200 --tokens 200 --rounds 3
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from tests.realserver import free_port, real_server
from tests.services import redis_server

from benchmarks.bench_core import load_arguments, one_round
from tokenrelay.bench.procwatch import cpu_seconds


@contextmanager
def direct_relay() -> Iterator[tuple[int, str]]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "benchmarks.direct_relay:app",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield process.pid, url
    finally:
        process.kill()
        process.wait()


def one_measured_round(pids: list[int], url: str, streams: int, tokens: int) -> float:
    """CPU microseconds per token that `pids` spent on one round of the load."""
    before = cpu_seconds(pids)
    results, _ = asyncio.run(one_round(url, streams, tokens))
    cpu = cpu_seconds(pids) - before
    assert all(r.ended == "done" and r.tokens == tokens for r in results), "incomplete"
    return cpu * 1e6 / sum(r.tokens for r in results)


def measure(pids: list[int], url: str, streams: int, tokens: int, rounds: int) -> list[float]:
    asyncio.run(one_round(url, 10, tokens))  # warm-up
    return [one_measured_round(pids, url, streams, tokens) for _ in range(rounds)]


def measure_paired(
    a: tuple[int, str], b: tuple[int, str], streams: int, tokens: int, rounds: int
) -> tuple[list[float], list[float]]:
    """Rounds on two servers taken in turns, so that drift on a shared machine hits both."""
    for _, url in (a, b):
        asyncio.run(one_round(url, 10, tokens))  # warm-up
    figures_a, figures_b = [], []
    for _ in range(rounds):
        figures_a.append(one_measured_round([a[0]], a[1], streams, tokens))
        figures_b.append(one_measured_round([b[0]], b[1], streams, tokens))
    return figures_a, figures_b


def redis_pid(url: str) -> int:
    port = url.rsplit(":", 1)[1].split("/")[0]
    out = subprocess.run(["pgrep", "-f", f"redis-server.*{port}"], capture_output=True, text=True)
    return int(out.stdout.split()[0])


def main() -> None:
    args = load_arguments(__doc__)
    load = (args.streams, args.tokens, args.rounds)
    rows: dict[str, list[float]] = {}
    with direct_relay() as direct, tempfile.TemporaryDirectory() as tmp:
        with real_server(Path(tmp)) as server:
            memory = (server.process.pid, server.url)
            rows["no log (direct relay)"], rows["memory log"] = measure_paired(
                direct, memory, *load
            )
        with redis_server(Path(tmp)) as redis_url:
            config = f'[redis]\nurl = "{redis_url}"\n'
            (Path(tmp) / "r").mkdir()
            with real_server(Path(tmp) / "r", config) as server:
                started = time.perf_counter()
                pids = [server.process.pid, redis_pid(redis_url)]
                rows["redis log (server + redis-server)"] = measure(pids, server.url, *load)
                rows["redis log (server only)"] = measure([server.process.pid], server.url, *load)
                elapsed = time.perf_counter() - started
    base = statistics.median(rows["no log (direct relay)"])
    print(f"{args.streams} streams x {args.tokens} tokens, sim/fast, {args.rounds} rounds each")
    for name, figures in rows.items():
        median = statistics.median(figures)
        print(
            f"  {name:36s} {median:6.1f} us/token  ({median / base:4.2f}x no log)  "
            f"rounds {', '.join(f'{f:.1f}' for f in figures)}"
        )
    pairs = zip(rows["no log (direct relay)"], rows["memory log"], strict=True)
    ratios = sorted(memory / direct for direct, memory in pairs)
    print(
        f"  memory log / no log, round by round (taken in turns): median "
        f"{statistics.median(ratios):.2f}x, range {ratios[0]:.2f}-{ratios[-1]:.2f}x"
    )
    redis_tokens = 2 * args.rounds * args.streams * args.tokens
    print(
        f"  redis replica throughput: ~{redis_tokens / elapsed:,.0f} tokens/s relayed "
        f"(wall, both redis runs, client on the same 2 cores)"
    )


if __name__ == "__main__":
    main()
