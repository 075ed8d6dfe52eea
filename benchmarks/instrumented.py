"""A real server that measures itself, in a child process: what bench_memory, bench_calls and
bench_gc share.

The child is `python -m <module> --serve PORT REPORT ARGS...`. It installs its SIGUSR1 hook (a
snapshot, a profiler switch) and calls `serve_forever`, uvicorn with uvloop and httptools as
`tokenrelay serve` runs it. The parent (`instrumented_server`) starts `tokenrelay
mock-upstream`, the child with a config pointing at the mock, and waits until it answers; it
signals the child and reads the report the child writes with `write_report`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from tests.realserver import free_port, mock_upstream

# One question for every stream (the load tester's old default): the mock paces each alike.
PROMPT = "Explain streaming relays"


def serve_forever(port: int, app: str = "tokenrelay.server.app:serve_app") -> None:
    import uvicorn

    config = uvicorn.Config(
        app,
        factory=True,
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        backlog=4096,
    )
    uvicorn.Server(config).run()


def write_report(out: Path, text: str) -> None:
    part = out.with_suffix(".part")
    part.write_text(text)
    part.replace(out)  # whole, or not there at all


def load_command(
    url: str, *, streams: int, tokens: int, api: str = "native", ramp_up: float = 0.0
) -> list[str]:
    """`tokenrelay bench` opening `streams` streams of `tokens` tokens at once, through the
    mock's `openai/default` (what every instrumented benchmark drives its server with)."""
    args = [sys.executable, "-m", "tokenrelay", "bench", url, "--api", api]
    args += ["--model", "openai/default", "--max-tokens", str(tokens), "--prompt", PROMPT]
    args += ["--concurrency", str(streams), "--requests", str(streams)]
    return args + (["--ramp-up", str(ramp_up)] if ramp_up else [])


@dataclass(frozen=True)
class InstrumentedServer:
    process: subprocess.Popen[bytes]
    url: str
    report_path: Path

    def signal(self) -> None:
        self.process.send_signal(signal.SIGUSR1)

    def active_streams(self) -> int:
        count: int = httpx.get(f"{self.url}/healthz", timeout=30).json()["active_streams"]
        return count

    def report(self) -> str:
        """The report, once the child has written it."""
        while not self.report_path.exists():
            time.sleep(0.5)
        return self.report_path.read_text()

    def wait_until_up(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                self.active_streams()
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.3)


@contextmanager
def instrumented_server(
    module: str, child_args: list[str], *, tokens_per_second: float
) -> Iterator[InstrumentedServer]:
    """`module` serving in a child, in front of a mock upstream pacing its tokens."""
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        with mock_upstream(tmp, ttft=0.05, tps=tokens_per_second) as mock:
            config = tmp / "tokenrelay.toml"
            config.write_text(f'[upstreams.openai]\nkind = "openai"\nbase_url = "{mock.url}/v1"\n')
            port, out = free_port(), tmp / "report.txt"
            process = subprocess.Popen(
                [sys.executable, "-m", module, "--serve", str(port), str(out), *child_args],
                env={**os.environ, "TOKENRELAY_CONFIG": str(config), "OPENAI_API_KEY": "sk-x"},
            )
            server = InstrumentedServer(process, f"http://127.0.0.1:{port}", out)
            try:
                server.wait_until_up()
                yield server
            finally:
                process.kill()
                process.wait()
