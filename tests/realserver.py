"""Run a real `tokenrelay serve` in a subprocess, for what only a real socket shows."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RealServer:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self) -> dict[str, object]:
        data: dict[str, object] = httpx.get(f"{self.url}/healthz", timeout=5).json()
        return data

    def wait_for(
        self, condition: str, predicate: Callable[[], object], timeout: float = 5.0
    ) -> None:
        """Poll until `predicate()` holds (tests may poll; the server never does)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {condition}; server log:\n{self.log()}")

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


@contextmanager
def _running(
    args: list[str],
    url: str,
    log_path: Path,
    env: dict[str, str] | None = None,
    open_files: int | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `python -m tokenrelay ARGS`, wait until /healthz answers, kill it afterwards.
    `open_files` sets its descriptor limit, soft and hard."""

    def limit_files() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tokenrelay", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=limit_files,
            start_new_session=True,  # a group of its own: its workers go with it (below)
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{args[0]} exited early:\n{log_path.read_text()}")
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):  # workers too, whatever became of it
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def real_server(
    tmp_path: Path,
    config: str = "",
    env: dict[str, str] | None = None,
    open_files: int | None = None,
    workers: int = 1,
) -> Iterator[RealServer]:
    port = free_port()
    config_path = tmp_path / "tokenrelay.toml"
    config_path.write_text(config)
    log_path = tmp_path / f"server-{port}.log"
    env = {**{k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}, **(env or {})}
    url = f"http://127.0.0.1:{port}"
    args = ["serve", "--port", str(port), "--config", str(config_path)]
    if workers > 1:
        args += ["--workers", str(workers)]
    with _running(args, url, log_path, env, open_files) as process:
        yield RealServer(process, url, log_path)


@dataclass
class MockUpstream:
    process: subprocess.Popen[bytes]
    url: str

    def record(self, bodies: bool = False) -> list[dict[str, object]]:
        params = {"bodies": "1"} if bodies else {}
        url = f"{self.url}/_mock/requests"
        data: list[dict[str, object]] = httpx.get(url, params=params, timeout=5).json()
        return data

    def last(self) -> dict[str, object]:
        return self.record()[-1]

    def sent(self, tag: str) -> list[dict[str, Any]]:
        """The bodies the mock was sent for model names tagged `+tag-<tag>`, in order."""
        return [
            cast(dict[str, Any], e["body"])
            for e in self.record(bodies=True)
            if f"+tag-{tag}" in str(e["model"])
        ]


def model_of(provider: str, *parts: str, tag: str = "") -> str:
    """`provider/fast+parts`, tagged `+tag-<tag>` for the mock's record (`MockUpstream.sent`);
    the sim in-process takes no tag."""
    name = "+".join(("fast", *parts))
    if tag and provider != "sim":
        name += f"+tag-{tag}"
    return f"{provider}/{name}"


def upstreams_config(mock: MockUpstream, streams: str = "max_retries = 0") -> str:
    """A tokenrelay.toml with a quick sim and `openai` and `anthropic` upstreams at the mock."""
    return f"""
[sim]
ttft = 0.01
tokens_per_second = 400.0
[streams]
{streams}
[upstreams.openai]
kind = "openai"
base_url = "{mock.url}/v1"
api_key_env = "TEST_UPSTREAM_KEY"
[upstreams.anthropic]
kind = "anthropic"
base_url = "{mock.url}"
api_key_env = "TEST_UPSTREAM_KEY"
"""


@contextmanager
def mock_upstream(tmp_path: Path, ttft: float = 0.02, tps: float = 400.0) -> Iterator[MockUpstream]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["mock-upstream", "--port", str(port), "--ttft", str(ttft), "--tps", str(tps)]
    with _running(args, url, tmp_path / f"mock-{port}.log") as process:
        yield MockUpstream(process, url)
