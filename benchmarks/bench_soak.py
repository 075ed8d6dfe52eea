"""Memory after a soak of connect-and-abort connections: does the server give it back?

Starts `tokenrelay serve` (sim, no delays; `--ttl 1`, the default here, so that the answers
kept for resumes do not count, or `--ttl 600` to count them as a replica keeps them), then
opens `--connections` connections, `--concurrency` at a time. Each sends a streaming request,
reads the first bytes of the answer and aborts (RST). It prints the server's RSS before,
right after, and after `--settle` seconds idle, once per allocator setting:

    default          glibc malloc as it comes
    arena_max_2      MALLOC_ARENA_MAX=2 (fewer per-thread arenas)
    trim_threshold   MALLOC_TRIM_THRESHOLD_=131072 (free memory back to the OS sooner)

    .venv/bin/python -m benchmarks.bench_soak --connections 40000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SETTINGS = {
    "default": {},
    "arena_max_2": {"MALLOC_ARENA_MAX": "2"},
    "trim_threshold": {"MALLOC_TRIM_THRESHOLD_": "131072"},
}
CONFIG = "[sim]\nttft = 0.0\ntokens_per_second = 0.0\n[streams]\nttl = %s\n"
REQUEST = (
    b"POST /api/chat/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s"
)
BODY = b'{"message": "Explain TCP handshakes", "model": "sim/fast", "max_tokens": 200}'


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def one(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(REQUEST % (len(BODY), BODY))
    await reader.read(512)  # the head and the first events
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
    writer.transport.abort()


async def soak(port: int, connections: int, concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def bounded() -> None:
        async with gate:
            with contextlib.suppress(OSError):  # a reset can land before the read
                await one(port)

    await asyncio.gather(*(bounded() for _ in range(connections)))


def run(name: str, env_extra: dict[str, str], args: argparse.Namespace) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "tokenrelay.toml"
        config.write_text(CONFIG % args.ttl)
        env = {**os.environ, **env_extra}
        command = [sys.executable, "-m", "tokenrelay", "serve", "--port", str(port)]
        server = subprocess.Popen(
            [*command, "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(200):
                try:
                    httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            asyncio.run(soak(port, 500, args.concurrency))  # warm up: imports, pools, caches
            time.sleep(2)
            before = rss_mib(server.pid)
            started = time.monotonic()
            asyncio.run(soak(port, args.connections, args.concurrency))
            took = time.monotonic() - started
            after = rss_mib(server.pid)
            time.sleep(args.settle)
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)  # a sweep's chance
            settled = rss_mib(server.pid)
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            ended = next(
                float(line.split()[1]) / 2**20
                for line in metrics.splitlines()
                if line.startswith("tokenrelay_ended_stream_bytes ")
            )
            print(
                f"{name:15s} RSS before {before:6.1f} MiB  after {after:6.1f} "
                f"(+{after - before:5.1f})  settled {settled:6.1f} (+{settled - before:5.1f})  "
                f"{args.connections / took:6.0f} conn/s  ended streams kept {ended:5.1f} MiB"
            )
        finally:
            server.terminate()
            server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=40_000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--settle", type=float, default=10.0)
    parser.add_argument("--ttl", type=float, default=1.0, help="600: the default, kept answers")
    parser.add_argument("--only", default=",".join(SETTINGS))
    args = parser.parse_args()
    for name in args.only.split(","):
        run(name, SETTINGS[name], args)


if __name__ == "__main__":
    main()
