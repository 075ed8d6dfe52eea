"""Python calls per relayed token: cProfile's call counts in a real server, under load.

A relayed token's CPU is mostly the interpreter running our code and the libraries' (perf:
libpython 56% of the server's samples, the kernel 30%, uvloop 7%; RESULTS.md, 2026-11-28), and
the profile is flat. So the count of calls per token, which cProfile gets exactly even though
it slows everything down, is the figure to bring down. Starts `tokenrelay mock-upstream`
(50 tokens/s) and a server under cProfile, relays `--streams` streams of `--tokens` tokens
with `tokenrelay bench`, and prints calls per token by function.

    .venv/bin/python -m benchmarks.bench_calls
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import signal
import subprocess
import sys
from pathlib import Path

from benchmarks.instrumented import (
    instrumented_server,
    load_command,
    serve_forever,
    write_report,
)


def report(profile: cProfile.Profile, tokens: int, top: int) -> str:
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    rows = sorted(
        (
            (calls, name, path.split("site-packages/")[-1].split("/src/")[-1], line)
            for (path, line, name), (_, calls, *_rest) in stats.items()
        ),
        reverse=True,
    )
    total = sum(row[0] for row in rows)
    lines = [f"{tokens} tokens relayed; {total / tokens:.1f} calls per token in all"]
    for calls, name, path, line in rows[:top]:
        lines.append(f"  {calls / tokens:6.2f}  {name}  {path}:{line}")
    return "\n".join(lines)


def serve(port: int, out: Path, top: int) -> None:
    """The server under test: SIGUSR1 starts counting; the second writes the report."""
    from tokenrelay.metrics import METRICS

    profile = cProfile.Profile()
    tokens_before: int | None = None

    def toggle(*_: object) -> None:
        nonlocal tokens_before
        if tokens_before is None:
            tokens_before = METRICS.tokens
            profile.enable()
            return
        profile.disable()
        write_report(out, report(profile, METRICS.tokens - tokens_before, top))

    signal.signal(signal.SIGUSR1, toggle)
    serve_forever(port)


def bench(url: str, api: str, streams: int, tokens: int) -> None:
    command = load_command(url, streams=streams, tokens=tokens, api=api)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--api", choices=("native", "openai"), default="native")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    child = [str(args.top)]
    with instrumented_server("benchmarks.bench_calls", child, tokens_per_second=50.0) as server:
        bench(server.url, args.api, 10, 5)  # warm-up: imports and pools before counting
        server.signal()
        bench(server.url, args.api, args.streams, args.tokens)
        server.signal()
        print(server.report())


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
