"""What sharing streams through Redis costs per token, against the memory log.

Same load for each (N concurrent `sim/fast` streams of T tokens), in one run: one replica with
its memory log; one with the Redis log, where redis-server's own CPU is counted too; and two
replicas sharing Redis behind nginx with deploy/nginx.conf as shipped (both replicas and
redis-server counted; nginx's own CPU on a row of its own). One process each, uvloop +
httptools. (What the log costs over no log at all is in bench_vs_nginx: the floor
relay.)

    .venv/bin/python -m benchmarks.bench_log --streams 200 --tokens 200 --rounds 3
    .venv/bin/python -m benchmarks.bench_log --paced 50   # tokens spaced as an LLM's are

Unpaced, a `sim/fast` answer is written whole before its reader has even attached, so readers
replay it from the log. Paced (`--paced TPS`: the sim at that rate, no jitter), readers follow
it live, which is where the Redis log serves local readers from memory.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from tests.realserver import real_server
from tests.services import redis_server, shipped_nginx

from benchmarks.bench_core import load_arguments, one_round
from tokenrelay.bench.procwatch import cpu_seconds

MODEL = "sim/fast+endless"


def one_measured_round(pids: list[int], url: str, streams: int, tokens: int) -> float:
    """CPU microseconds per token that `pids` spent on one round of the load."""
    before = cpu_seconds(pids)
    results, _ = asyncio.run(one_round(url, streams, tokens, MODEL))
    cpu = cpu_seconds(pids) - before
    assert all(r.ended == "done" and r.tokens == tokens for r in results), "incomplete"
    return cpu * 1e6 / sum(r.tokens for r in results)


def measure(pids: list[int], url: str, streams: int, tokens: int, rounds: int) -> list[float]:
    # Warm-up at the full concurrency: a replica in steady state has its Redis connections
    # open already; opening 200 of them would otherwise be billed to the first round.
    asyncio.run(one_round(url, streams, 10, MODEL))
    return [one_measured_round(pids, url, streams, tokens) for _ in range(rounds)]


def redis_pid(url: str) -> int:
    port = url.rsplit(":", 1)[1].split("/")[0]
    out = subprocess.run(["pgrep", "-f", f"redis-server.*{port}"], capture_output=True, text=True)
    return int(out.stdout.split()[0])


def with_children(pid: int) -> list[int]:
    """A process and its children (nginx's master and its worker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *map(int, children)]


class Row(NamedTuple):
    name: str
    figures: list[float]  # CPU us/token, per round
    tokens_per_second: float  # relayed, wall clock over the measured rounds


def measured(name: str, pids: list[int], url: str, load: tuple[int, int, int]) -> Row:
    started = time.perf_counter()
    figures = measure(pids, url, *load)
    streams, tokens, rounds = load
    return Row(name, figures, rounds * streams * tokens / (time.perf_counter() - started))


def main() -> None:
    global MODEL
    paced = 0.0
    if "--paced" in sys.argv:
        at = sys.argv.index("--paced")
        paced = float(sys.argv[at + 1])
        del sys.argv[at : at + 2]
        MODEL = "sim/default+endless"
    args = load_arguments(__doc__)
    load = (args.streams, args.tokens, args.rounds)
    sim = f"[sim]\nttft = 0.0\ntokens_per_second = {paced}\njitter = 0.0\n" if paced else ""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with real_server(tmp, sim) as server:
            rows.append(measured("memory log", [server.process.pid], server.url, load))
        with redis_server(tmp) as redis_url:
            config = f'[redis]\nurl = "{redis_url}"\n' + sim
            redis = redis_pid(redis_url)
            for name in ("r", "a", "b"):
                (tmp / name).mkdir()
            with real_server(tmp / "r", config) as server:
                pids = [server.process.pid, redis]
                rows.append(measured("redis log (+ redis-server)", pids, server.url, load))
                rows.append(measured("  of which tokenrelay", pids[:1], server.url, load))
            with (
                real_server(tmp / "a", config) as a,
                real_server(tmp / "b", config) as b,
                shipped_nginx(tmp, [a.url, b.url]) as (url, nginx),
            ):
                pair = [a.process.pid, b.process.pid, redis]
                rows.append(measured("two behind nginx (+ redis-server)", pair, url, load))
                rows.append(measured("  nginx itself", with_children(nginx.pid), url, load))
    report(rows, args.streams, args.tokens, args.rounds, paced)


def report(rows: list[Row], streams: int, tokens: int, rounds: int, paced: float) -> None:
    base = statistics.median(rows[0].figures)
    pace = f"paced at {paced:g} tokens/s" if paced else "sim/fast"
    print(f"{streams} streams x {tokens} tokens, {pace}, {rounds} rounds each")
    print("  CPU per token (us), against the memory log; throughput relayed (tokens/s, wall)")
    for row in rows:
        median = statistics.median(row.figures)
        rounds_text = ", ".join(f"{f:.1f}" for f in row.figures)
        print(
            f"  {row.name:36s} {median:6.1f} us/token  ({median / base:4.2f}x)  "
            f"~{row.tokens_per_second:,.0f} tokens/s  rounds {rounds_text}"
        )
    print(
        "  (throughput: the load generator, every replica, redis-server and nginx share the "
        "2 cores; paced runs are bound by the pace)"
    )


if __name__ == "__main__":
    main()
