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
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.realserver import free_port, mock_upstream

from benchmarks.bench_memory import wait_until_up


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
    import uvicorn

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
        part = out.with_suffix(".part")
        part.write_text(report(profile, METRICS.tokens - tokens_before, top))
        part.replace(out)

    signal.signal(signal.SIGUSR1, toggle)
    config = uvicorn.Config(
        "tokenrelay.server.app:serve_app",
        factory=True,
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
    )
    uvicorn.Server(config).run()


def bench(url: str, api: str, streams: int, tokens: int) -> None:
    args = ["bench", url, "--api", api, "--model", "openai/default", "--max-tokens", str(tokens)]
    args += ["--concurrency", str(streams), "--requests", str(streams)]
    subprocess.run(
        [sys.executable, "-m", "tokenrelay", *args], check=True, stdout=subprocess.DEVNULL
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--api", choices=("native", "openai"), default="native")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        with mock_upstream(tmp, ttft=0.05, tps=50.0) as mock:
            config = tmp / "tokenrelay.toml"
            config.write_text(f'[upstreams.openai]\nkind = "openai"\nbase_url = "{mock.url}/v1"\n')
            port, out = free_port(), tmp / "report.txt"
            child = ["--serve", str(port), str(out), str(args.top)]
            server = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.bench_calls", *child],
                env={**os.environ, "TOKENRELAY_CONFIG": str(config), "OPENAI_API_KEY": "sk-x"},
            )
            url = f"http://127.0.0.1:{port}"
            try:
                wait_until_up(url)
                bench(url, args.api, 10, 5)  # warm-up: imports and pools before counting
                server.send_signal(signal.SIGUSR1)
                bench(url, args.api, args.streams, args.tokens)
                server.send_signal(signal.SIGUSR1)
                while not out.exists():
                    time.sleep(0.5)
                print(out.read_text())
            finally:
                server.kill()
                server.wait()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
