"""What the garbage collector costs a loaded server: its pauses, and its time per request.

Starts `tokenrelay mock-upstream` and a server that times every collection (`gc.callbacks`),
then sends `--rounds` waves of `--streams` concurrent 20-token streams with `tokenrelay bench`
and prints, per generation, how many collections ran, the longest and the total, and all of
it per request. `--young N` replaces the young-generation threshold `tokenrelay serve` sets
(server/app.py `tune_gc`), for comparison: `--young 700` is CPython's default.

    .venv/bin/python -m benchmarks.bench_gc --streams 2000 --rounds 3
    .venv/bin/python -m benchmarks.bench_gc --streams 2000 --rounds 3 --young 700

A full collection walks every tracked object, and an open stream is about 150 of them, so the
pauses grow with the number of open streams: compare at the same load.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from starlette.applications import Starlette

from benchmarks.instrumented import (
    instrumented_server,
    load_command,
    serve_forever,
    write_report,
)
from tokenrelay.server.app import serve_app

YOUNG_ENV = "TOKENRELAY_BENCH_GC_YOUNG"  # the child's --young, for its app factory


def app_factory() -> Starlette:
    """`tokenrelay serve`'s app, with the young threshold replaced if asked."""
    app = serve_app()
    if young := int(os.environ.get(YOUNG_ENV) or 0):
        _, middle, old = gc.get_threshold()
        gc.set_threshold(young, middle, old)
    return app


def serve(port: int, out: Path, young: int) -> None:
    """The server under test: times each collection; SIGUSR1 writes the report."""
    os.environ[YOUNG_ENV] = str(young)  # uvicorn imports this module anew, not as __main__
    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    started = [0.0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append((time.perf_counter() - started[0]) * 1000)

    def report(*_: object) -> None:
        lines = [f"young threshold {gc.get_threshold()[0]}"]
        for generation, times in pauses.items():
            if times:
                lines.append(
                    f"  generation {generation}: {len(times):5d} collections, "
                    f"longest {max(times):6.1f} ms, total {sum(times):7.0f} ms"
                )
        lines.append(f"total {sum(map(sum, pauses.values())):.0f} ms")
        write_report(out, "\n".join(lines))

    gc.callbacks.append(timed)
    signal.signal(signal.SIGUSR1, report)
    serve_forever(port, app="benchmarks.bench_gc:app_factory")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--young", type=int, default=0, help="young threshold (default: ours)")
    args = parser.parse_args()
    child = ["--young", str(args.young)]
    with instrumented_server("benchmarks.bench_gc", child, tokens_per_second=50.0) as server:
        load = load_command(server.url, streams=args.streams, tokens=20)
        for _ in range(args.rounds):
            subprocess.run(load, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        server.signal()
        text = server.report()
    requests = args.streams * args.rounds
    total_ms = float(text.rsplit("total ", 1)[1].split()[0])
    print(f"{args.rounds} rounds of {args.streams} concurrent 20-token streams")
    print(text.rsplit("\ntotal", 1)[0])
    print(f"collection time per request: {total_ms * 1000 / requests:.0f} µs")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[5]))
    else:
        main()
