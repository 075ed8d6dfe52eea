"""Where an open stream's memory goes: tracemalloc in a real server, grouped by owner.

Starts `tokenrelay mock-upstream` (slow tokens, so streams stay open) and a server run under
`tracemalloc` (this module's `serve`, uvicorn with uvloop and httptools as `tokenrelay serve`
runs it). After a warm-up it takes a snapshot, opens `--streams` streams with
`tokenrelay bench`, takes another while they are all open, and prints the difference per
stream: by owner (the innermost frame in tokenrelay, uvicorn or Starlette) and by line.

    .venv/bin/python -m benchmarks.bench_memory --streams 500

tracemalloc counts Python's allocations only (not the kernel's socket buffers, nor allocator
slack), and slows the server several times over; use `bench_vs_nginx --only memory` for RSS.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import httpx
from tests.realserver import free_port, mock_upstream

OWNERS = (("/tokenrelay/", None), ("site-packages/uvicorn", "uvicorn"), ("starlette", "starlette"))


def owner(frames: tracemalloc.Traceback) -> str:
    for frame in reversed(frames):  # innermost first
        for marker, name in OWNERS:
            if marker in frame.filename:
                return name or frame.filename.split("/tokenrelay/")[-1]
    return "other (interpreter, asyncio, uvloop)"


def report(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, streams: int) -> str:
    diff = after.compare_to(before, "traceback")
    total = sum(stat.size_diff for stat in diff)
    groups: collections.Counter[str] = collections.Counter()
    for stat in diff:
        groups[owner(stat.traceback)] += stat.size_diff
    lines = [f"{total / streams / 1024:.1f} KiB of Python allocations per open stream"]
    lines += [f"  {size / streams:7.0f} B  {name}" for name, size in groups.most_common(15)]
    lines.append("largest lines:")
    for stat in after.compare_to(before, "lineno")[:15]:
        where = stat.traceback[0]
        lines.append(f"  {stat.size_diff / streams:7.0f} B  {where.filename}:{where.lineno}")
    return "\n".join(lines)


def serve(port: int, out: Path, streams: int) -> None:
    """The server under test: SIGUSR1 takes a snapshot; the second writes the report."""
    tracemalloc.start(8)
    import uvicorn

    snapshots: list[tracemalloc.Snapshot] = []

    def snapshot(*_: object) -> None:
        snapshots.append(tracemalloc.take_snapshot())
        if len(snapshots) == 2:
            part = out.with_suffix(".part")
            part.write_text(report(snapshots[0], snapshots[1], streams))
            part.replace(out)  # whole, or not there at all

    signal.signal(signal.SIGUSR1, snapshot)
    config = uvicorn.Config(
        "tokenrelay.server.app:serve_app",
        factory=True,
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        backlog=4096,
    )
    uvicorn.Server(config).run()


def bench(url: str, streams: int, max_tokens: int) -> subprocess.Popen[bytes]:
    args = ["bench", url, "--model", "openai/default", "--max-tokens", str(max_tokens)]
    args += ["--concurrency", str(streams), "--requests", str(streams), "--ramp-up", "2"]
    return subprocess.Popen(
        [sys.executable, "-m", "tokenrelay", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def active_streams(url: str) -> int:
    count: int = httpx.get(f"{url}/healthz", timeout=30).json()["active_streams"]
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        with mock_upstream(tmp, ttft=0.05, tps=2.0) as mock:  # 100 tokens: open for ~50 s
            config = tmp / "tokenrelay.toml"
            config.write_text(f'[upstreams.openai]\nkind = "openai"\nbase_url = "{mock.url}/v1"\n')
            port, out = free_port(), tmp / "report.txt"
            child = ["--serve", str(port), str(out), "--streams", str(args.streams)]
            server = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.bench_memory", *child],
                env={**os.environ, "TOKENRELAY_CONFIG": str(config), "OPENAI_API_KEY": "sk-x"},
            )
            url = f"http://127.0.0.1:{port}"
            try:
                run(server, url, out, args.streams)
            finally:
                server.kill()
                server.wait()


def wait_until_up(url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            active_streams(url)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise SystemExit("the server did not start") from None
            time.sleep(0.3)


def run(server: subprocess.Popen[bytes], url: str, out: Path, streams: int) -> None:
    wait_until_up(url)
    bench(url, 20, 4).wait()  # warm-up: imports, pools and caches made before the baseline
    time.sleep(2)
    server.send_signal(signal.SIGUSR1)
    time.sleep(3)
    load = bench(url, streams, 100)
    try:
        deadline = time.monotonic() + 120
        while active_streams(url) < streams:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {active_streams(url)} of {streams} streams opened")
            time.sleep(1)
        server.send_signal(signal.SIGUSR1)
        while not out.exists():
            time.sleep(1)
        print(f"{streams} open streams (the mock's tokens at 2/s)")
        print(out.read_text())
    finally:
        load.kill()
        load.wait()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[5]))
    else:
        main()
