"""The performance budget: tokenrelay against the Python floor and nginx, on one upstream.

One run on one machine starts `tokenrelay mock-upstream`, a `tokenrelay serve` whose `openai`
provider is that mock, the floor relay (benchmarks/floor_relay.py: raw ASGI on uvicorn, the
aiohttp client, orjson, no features) and nginx (Debian's, one worker, `proxy_buffering off`),
all in front of the same mock. Loads are made by `tokenrelay bench`'s engine in this process,
alternating targets round by round so drifting machine load hits all alike. Server CPU and RSS
come from /proc and count only the server (nginx: master and worker).

    .venv/bin/python -m benchmarks.bench_vs_nginx                    # every section
    .venv/bin/python -m benchmarks.bench_vs_nginx --only cpu --rounds 3

Sections (the budget in brackets; the ratio to nginx is reported, not a gate):
    cpu      200 streams x 200 tokens at 50 tokens/s: server CPU per relayed token
             [<= 1.15x the floor]
    short    20-token streams, 100 at a time: server CPU per request [<= 1.25x the floor]
    memory   RSS with 100 and with 2000 open streams: per stream [<= 1.1x the floor]; TTFT
             p99 at 2000 against nginx
    slow     400, then 4000 open streams at 1 token/s: CPU per token [4000 <= 1.3x 400]
    many     5000 concurrent streams on one tokenrelay process, no errors
    cancel   cancels under load (200 streams, half cancelled): upstream-close lag [p99 <= 50 ms]
             (benchmarks/bench_cancel.py measures it phase by phase)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tests.realserver import free_port, mock_upstream, real_server
from tests.services import find_binary, nginx_proxy

from tokenrelay.bench.load import Options
from tokenrelay.bench.procwatch import process_tree, user_system_seconds
from tokenrelay.bench.runner import run_sync

SECTIONS = ("cpu", "short", "memory", "slow", "many", "cancel")
# One question for every request: the mock then paces each stream alike, so rounds compare.
PROMPT = "Explain how streaming relays work"


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    pid: int
    api: str
    model: str


@contextmanager
def floor_relay(tmp: Path, upstream_url: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """benchmarks/floor_relay.py under uvicorn (uvloop, httptools), in front of the upstream."""
    port = free_port()
    log = (tmp / f"floor-{port}.log").open("wb")
    uvicorn = [sys.executable, "-m", "uvicorn", "benchmarks.floor_relay:app"]
    options = [
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(
        [*uvicorn, *options, "--log-level", "warning", "--port", str(port)],
        env={**os.environ, "FLOOR_UPSTREAM": f"{upstream_url}/v1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        yield url, process
    finally:
        process.kill()
        process.wait()
        log.close()


@contextmanager
def targets(tmp: Path, tps: float, ttft: float) -> Iterator[tuple[list[Target], str]]:
    """nginx, the floor relay and tokenrelay (native and OpenAI-compatible API) in front of one
    mock."""
    nginx = find_binary("nginx")
    if nginx is None:
        raise SystemExit("nginx is not installed (Debian: apt-get install nginx)")
    with ExitStack() as stack:
        mock = stack.enter_context(mock_upstream(tmp, ttft=ttft, tps=tps))
        config = (
            f'[upstreams.openai]\nkind = "openai"\nbase_url = "{mock.url}/v1"\n'
            "[streams]\nmax_retries = 0\n"
        )
        relay = stack.enter_context(real_server(tmp, config))
        proxy_url, proxy = stack.enter_context(nginx_proxy(tmp, mock.url, binary=nginx))
        floor_url, floor = stack.enter_context(floor_relay(tmp, mock.url))
        pid = relay.process.pid
        yield (
            [
                Target("nginx", proxy_url, proxy.pid, "openai", "default"),
                Target("floor", floor_url, floor.pid, "native", "openai/default"),
                Target("tokenrelay native", relay.url, pid, "native", "openai/default"),
                Target("tokenrelay /v1", relay.url, pid, "openai", "openai/default"),
            ],
            mock.url,
        )


def load(target: Target, **shape: Any) -> dict[str, Any]:
    options = Options(
        url=target.url,
        api="native" if target.api == "native" else "openai",
        model=target.model,
        prompt=PROMPT,
        server_pid=target.pid,
        **shape,
    )
    report = run_sync(options)
    phase: dict[str, Any] = report["phases"][0]
    return phase


def paired(names: list[Target], rounds: int, figure: str, **shape: Any) -> dict[str, list[float]]:
    """Alternate targets round by round; collect `figure` (a server key) per round."""
    values: dict[str, list[float]] = {t.name: [] for t in names}
    for n in range(1, rounds + 1):
        for target in names:
            phase = load(target, **shape)
            value = phase["server"][figure]
            values[target.name].append(value)
            print(
                f"  round {n} {target.name:18s} {figure} {value:8.1f}  "
                f"ok {phase['completed']}/{phase['requests']} errors {phase['errors'] or '-'} "
                f"TTFT p99 {phase['ttft_ms']['p99']:.0f} ms  "
                f"generator {phase['generator']['cpu_share_of_one_core']:.0%}"
            )
    return values


def compare(values: dict[str, list[float]], unit: str, budget: float) -> None:
    nginx, floor = (statistics.median(values[name]) for name in ("nginx", "floor"))
    for name, series in values.items():
        median = statistics.median(series)
        ratios = f"  {median / nginx:.2f}x nginx" if name != "nginx" else ""
        if name.startswith("tokenrelay"):
            ratios += f", {median / floor:.2f}x the floor (budget {budget}x)"
        print(f"  {name:18s} median {median:8.1f} {unit}{ratios}")


def section_cpu(all_targets: list[Target], rounds: int) -> None:
    print("cpu: 200 streams x 200 tokens at 50 tokens/s; server CPU us per relayed token")
    shape = {"concurrency": (200,), "requests": 200, "max_tokens": 200}
    compare(paired(all_targets, rounds, "cpu_us_per_token", **shape), "us/token", 1.15)
    print("  split into user space and kernel (one more round each):")
    for target in all_targets:
        pids = process_tree(target.pid)
        user, system = user_system_seconds(pids)
        phase = load(target, **shape)
        user_after, system_after = user_system_seconds(pids)
        tokens = phase["output_tokens"] or 1
        print(
            f"  {target.name:18s} user {(user_after - user) / tokens * 1e6:6.1f} us/token  "
            f"kernel {(system_after - system) / tokens * 1e6:6.1f} us/token"
        )


def section_short(all_targets: list[Target], rounds: int) -> None:
    print("short: 1000 streams of 20 tokens, 100 at a time; server CPU us per request")
    shape = {"concurrency": (100,), "requests": 1000, "max_tokens": 20}
    compare(paired(all_targets, rounds, "cpu_us_per_request", **shape), "us/request", 1.25)


def section_memory(all_targets: list[Target], rounds: int) -> None:
    """RSS per open stream, from the first round (a fresh process: a server keeps the heap it
    grew, so a later round's 100-stream phase starts high); TTFT p99 at 2000 from every round,
    the targets taken in turns, since it moves by tens of ms from one run to the next."""
    print("memory: RSS with 100 and with 2000 open streams (long, slow answers)")
    pairs = [t for t in all_targets if t.name in ("nginx", "floor", "tokenrelay native")]
    ttft: dict[str, list[float]] = {t.name: [] for t in pairs}
    per_stream: dict[str, float] = {}
    for n in range(1, rounds + 1):
        for target in pairs:
            rss = {}
            for streams in (100, 2000):
                phase = load(
                    target, concurrency=(streams,), requests=streams, max_tokens=40, ramp_up=2.0
                )
                rss[streams] = phase["server"]["rss_mib_max"]
                print(
                    f"  round {n} {target.name:18s} {streams:5d} streams: "
                    f"RSS max {rss[streams]:.1f} MiB, ok {phase['completed']}/{streams}, "
                    f"errors {phase['errors'] or '-'}, TTFT p99 {phase['ttft_ms']['p99']:.0f} ms, "
                    f"connections {phase['server']['max_connections']}"
                )
            ttft[target.name].append(phase["ttft_ms"]["p99"])
            if n == 1:
                per_stream[target.name] = (rss[2000] - rss[100]) * 1024 / 1900
    for name, kb in per_stream.items():
        ratio = f", {kb / per_stream['floor']:.2f}x the floor (budget 1.1x)"
        shown = ratio if name.startswith("tokenrelay") else ""
        print(f"  {name:18s} memory per open stream {kb:.1f} KB{shown}")
    added = sorted(t - n for n, t in zip(ttft["nginx"], ttft["tokenrelay native"], strict=True))
    nginx, relay = (statistics.median(ttft[name]) for name in ("nginx", "tokenrelay native"))
    print(
        f"  TTFT p99 at 2000 streams, median of rounds: nginx {nginx:.0f} ms, tokenrelay "
        f"{relay:.0f} ms; added, round by round: median {statistics.median(added):+.0f} ms, "
        f"range {added[0]:+.0f} to {added[-1]:+.0f} ms"
    )


def section_slow(all_targets: list[Target], rounds: int) -> None:
    """CPU per token with many slow streams open: what per-stream timers and idle state cost
    as the count grows (the work per token should not grow with the streams open)."""
    print("slow: 400 and 4000 open streams at 1 token/s; server CPU us per relayed token")
    target = next(t for t in all_targets if t.name == "tokenrelay native")
    figures: dict[int, list[float]] = {400: [], 4000: []}
    for n in range(1, rounds + 1):
        for streams in (400, 4000):
            phase = load(
                target, concurrency=(streams,), requests=streams, max_tokens=20, ramp_up=4.0
            )
            figures[streams].append(phase["server"]["cpu_us_per_token"])
            print(
                f"  round {n} {streams:5d} streams: {figures[streams][-1]:6.1f} us/token, "
                f"ok {phase['completed']}/{streams}, errors {phase['errors'] or '-'}"
            )
    few, many = (statistics.median(figures[k]) for k in (400, 4000))
    print(f"  median: 400 {few:.1f}, 4000 {many:.1f} us/token: {many / few:.2f}x (budget 1.3x)")


def section_many(all_targets: list[Target]) -> None:
    print("many: 5000 concurrent streams on one tokenrelay process")
    target = next(t for t in all_targets if t.name == "tokenrelay native")
    phase = load(target, concurrency=(5000,), requests=5000, max_tokens=20, ramp_up=5.0)
    print(
        f"  ok {phase['completed']}/5000, errors {phase['errors'] or '-'}, connections "
        f"{phase['server']['max_connections']}, RSS max {phase['server']['rss_mib_max']} MiB, "
        f"TTFT p99 {phase['ttft_ms']['p99']:.0f} ms"
    )


def section_cancel(all_targets: list[Target], mock_url: str) -> None:
    print("cancel: 200 streams, half cancelled after 1-100 tokens; lag to the upstream's close")
    target = next(t for t in all_targets if t.name == "tokenrelay native")
    phase = load(
        target,
        concurrency=(200,),
        requests=400,
        max_tokens=200,
        cancel_rate=0.5,
        upstream=mock_url,
        seed=1,
    )
    cancel = phase["cancel"]
    lag = cancel["upstream_close_lag_ms"]
    print(
        f"  {cancel['cancelled']} cancelled: upstream saw {cancel['reached_upstream']}, "
        f"not seen {cancel['not_seen']}, finished first {cancel['upstream_finished_first']}; "
        f"lag p50 {lag['p50']:.1f} ms p99 {lag['p99']:.1f} ms max {lag['max']:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    chosen = args.only.split(",")
    with (
        tempfile.TemporaryDirectory() as tmp,
        targets(Path(tmp), tps=50, ttft=0.2) as (
            all_targets,
            mock_url,
        ),
    ):
        if "cpu" in chosen:
            section_cpu(all_targets, args.rounds)
        if "short" in chosen:
            section_short(all_targets, args.rounds)
        if "cancel" in chosen:
            section_cancel(all_targets, mock_url)
    if "slow" in chosen:
        with (
            tempfile.TemporaryDirectory() as tmp,
            targets(Path(tmp), tps=1, ttft=0.5) as (all_targets, _),
        ):
            section_slow(all_targets, args.rounds)
    slow = {"memory", "many"} & set(chosen)
    if slow:
        # Thousands of open streams need slow answers, or the mock itself runs out of CPU.
        with (
            tempfile.TemporaryDirectory() as tmp,
            targets(Path(tmp), tps=2, ttft=0.5) as (
                all_targets,
                _,
            ),
        ):
            if "memory" in chosen:
                section_memory(all_targets, args.rounds)
            if "many" in chosen:
                section_many(all_targets)


if __name__ == "__main__":
    main()
