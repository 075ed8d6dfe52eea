"""Where an open stream's memory goes: tracemalloc in a real server, grouped by owner.

Starts `tokenrelay mock-upstream` (slow tokens, so streams stay open) and a server run under
`tracemalloc` (this module's `serve`, uvicorn with uvloop and httptools as `tokenrelay serve`
runs it). After a warm-up it takes a snapshot, opens `--streams` streams with
`tokenrelay bench`, takes another while they are all open, and prints the difference per
stream: by owner (the innermost frame in tokenrelay, uvicorn or Starlette) and by line.

    .venv/bin/python -m benchmarks.bench_memory --streams 500 [--api openai]

tracemalloc counts Python's allocations only (not the kernel's socket buffers, nor allocator
slack), and slows the server several times over; use `bench_vs_nginx --only memory` for RSS.
"""

from __future__ import annotations

import argparse
import collections
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

from benchmarks.instrumented import (
    InstrumentedServer,
    instrumented_server,
    load_command,
    serve_forever,
    write_report,
)

OWNERS = (("/tokenrelay/", None), ("site-packages/uvicorn", "uvicorn"), ("starlette", "starlette"))


def owner(frames: tracemalloc.Traceback) -> str:
    for frame in reversed(frames):  # innermost first
        for marker, name in OWNERS:
            if marker in frame.filename:
                return name or frame.filename.split("/tokenrelay/")[-1]
    return "other (interpreter, asyncio, uvloop)"


def report(
    before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, streams: int, top: int
) -> str:
    diff = after.compare_to(before, "traceback")
    total = sum(stat.size_diff for stat in diff)
    groups: collections.Counter[str] = collections.Counter()
    for stat in diff:
        groups[owner(stat.traceback)] += stat.size_diff
    lines = [f"{total / streams / 1024:.1f} KiB of Python allocations per open stream"]
    lines += [f"  {size / streams:7.0f} B  {name}" for name, size in groups.most_common(15)]
    lines.append("largest lines (bytes and blocks per stream):")
    for stat in after.compare_to(before, "lineno")[:top]:
        where = stat.traceback[0]
        per_stream = f"{stat.size_diff / streams:7.0f} B {stat.count_diff / streams:5.1f}"
        lines.append(f"  {per_stream}  {where.filename.split('/')[-1]}:{where.lineno}")
    return "\n".join(lines)


def serve(port: int, out: Path, streams: int, top: int) -> None:
    """The server under test: SIGUSR1 takes a snapshot; the second writes the report."""
    tracemalloc.start(8)
    snapshots: list[tracemalloc.Snapshot] = []

    def snapshot(*_: object) -> None:
        snapshots.append(tracemalloc.take_snapshot())
        if len(snapshots) == 2:
            write_report(out, report(snapshots[0], snapshots[1], streams, top))

    signal.signal(signal.SIGUSR1, snapshot)
    serve_forever(port)


def bench(url: str, streams: int, max_tokens: int, api: str = "native") -> subprocess.Popen[bytes]:
    command = load_command(url, streams=streams, tokens=max_tokens, api=api, ramp_up=2)
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--api", choices=("native", "openai"), default="native")
    parser.add_argument("--lines", type=int, default=15, help="how many of the largest lines")
    args = parser.parse_args()
    child = ["--streams", str(args.streams), "--lines", str(args.lines)]
    # 2 tokens/s: 100 tokens keep every stream open for about 50 s
    with instrumented_server("benchmarks.bench_memory", child, tokens_per_second=2.0) as server:
        run(server, args.streams, args.api)


def run(server: InstrumentedServer, streams: int, api: str) -> None:
    bench(server.url, 20, 4, api).wait()  # warm-up: imports, pools and caches made first
    time.sleep(2)
    server.signal()
    time.sleep(3)
    load = bench(server.url, streams, 100, api)
    try:
        deadline = time.monotonic() + 120
        while server.active_streams() < streams:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {server.active_streams()} of {streams} streams opened")
            time.sleep(1)
        server.signal()
        print(f"{streams} open streams on the {api} API (the mock's tokens at 2/s)")
        print(server.report())
    finally:
        load.kill()
        load.wait()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[5]), int(sys.argv[7]))
    else:
        main()
