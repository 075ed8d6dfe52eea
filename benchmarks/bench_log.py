"""What durability costs per token: the memory log and the Redis log against no log at all.

Same load for each (N concurrent `sim/fast` streams of T tokens): a direct relay with no log
(benchmarks/direct_relay.py), tokenrelay with its memory log, tokenrelay with the Redis log.
For Redis, redis-server's own CPU is counted too. One process each, uvloop + httptools.

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

from benchmarks.bench_core import cpu_seconds, load_arguments, one_round


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


def measure(pids: list[int], url: str, streams: int, tokens: int, rounds: int) -> list[float]:
    asyncio.run(one_round(url, 10, tokens))  # warm-up
    figures = []
    for _ in range(rounds):
        before = sum(cpu_seconds(p) for p in pids)
        results, _ = asyncio.run(one_round(url, streams, tokens))
        cpu = sum(cpu_seconds(p) for p in pids) - before
        assert all(r.ended == "done" and r.tokens == tokens for r in results), "incomplete"
        figures.append(cpu * 1e6 / sum(r.tokens for r in results))
    return figures


def redis_pid(url: str) -> int:
    port = url.rsplit(":", 1)[1].split("/")[0]
    out = subprocess.run(["pgrep", "-f", f"redis-server.*{port}"], capture_output=True, text=True)
    return int(out.stdout.split()[0])


def main() -> None:
    args = load_arguments(__doc__)
    load = (args.streams, args.tokens, args.rounds)
    rows: dict[str, list[float]] = {}
    with direct_relay() as (pid, url):
        rows["no log (direct relay)"] = measure([pid], url, *load)
    with tempfile.TemporaryDirectory() as tmp:
        with real_server(Path(tmp)) as server:
            rows["memory log"] = measure([server.process.pid], server.url, *load)
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
    redis_tokens = 2 * args.rounds * args.streams * args.tokens
    print(
        f"  redis replica throughput: ~{redis_tokens / elapsed:,.0f} tokens/s relayed "
        f"(wall, both redis runs, client on the same 2 cores)"
    )


if __name__ == "__main__":
    main()
