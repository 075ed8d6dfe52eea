"""What sharing streams through Redis costs per token, against the memory log.

Same load for each (N concurrent `sim/fast` streams of T tokens): tokenrelay with its memory
log, then with the Redis log, where redis-server's own CPU is counted too. One process each,
uvloop + httptools. (What the log costs over no log at all is in bench_vs_nginx: the floor
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

from tests.realserver import real_server
from tests.services import redis_server

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
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        with real_server(Path(tmp), sim) as server:
            started = time.perf_counter()
            rows["memory log"] = measure([server.process.pid], server.url, *load)
            memory_elapsed = time.perf_counter() - started
        with redis_server(Path(tmp)) as redis_url:
            config = f'[redis]\nurl = "{redis_url}"\n' + sim
            (Path(tmp) / "r").mkdir()
            with real_server(Path(tmp) / "r", config) as server:
                started = time.perf_counter()
                pids = [server.process.pid, redis_pid(redis_url)]
                rows["redis log (server + redis-server)"] = measure(pids, server.url, *load)
                rows["redis log (server only)"] = measure([server.process.pid], server.url, *load)
                elapsed = time.perf_counter() - started
    base = statistics.median(rows["memory log"])
    pace = f"paced at {paced:g} tokens/s" if paced else "sim/fast"
    print(f"{args.streams} streams x {args.tokens} tokens, {pace}, {args.rounds} rounds each")
    for name, figures in rows.items():
        median = statistics.median(figures)
        print(
            f"  {name:36s} {median:6.1f} us/token  ({median / base:4.2f}x the memory log)  "
            f"rounds {', '.join(f'{f:.1f}' for f in figures)}"
        )
    tokens = args.rounds * args.streams * args.tokens
    print(
        f"  throughput, one replica: memory log ~{tokens / memory_elapsed:,.0f} tokens/s, "
        f"redis log ~{2 * tokens / elapsed:,.0f} tokens/s relayed (wall; paced runs are bound "
        f"by the pace; the client shares the 2 cores)"
    )


if __name__ == "__main__":
    main()
