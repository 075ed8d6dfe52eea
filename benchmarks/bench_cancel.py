"""Cancel lag: from a client's abort to the upstream seeing tokenrelay close, in each phase.

A real tokenrelay in front of the mock upstream (over the OpenAI wire format). Each trial opens
a request with a raw socket, closes it at the chosen moment, and reads the mock's record of
when its client left. Prints p50, p99 and max per phase; the goal is p99 <= 50 ms everywhere.

    .venv/bin/python -m benchmarks.bench_cancel --trials 50
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from tests.abort import open_request, read_until, upstream_gone_after
from tests.realserver import mock_upstream, real_server

COMMIT_DEADLINE = 0.3
PHASES = {
    # phase: (model base, path, how long to wait or what to read before closing)
    "before headers (upstream silent)": ("slow-start", "/api/chat/stream", "sleep"),
    "waiting for first token (headers sent)": ("slow-start", "/api/chat/stream", "headers"),
    "mid-stream": ("default+endless", "/api/chat/stream", "token"),
    "non-streaming /api/chat": ("slow-start", "/api/chat", "sleep"),
    "non-streaming /v1/chat/completions": ("slow-start", "/v1/chat/completions", "sleep"),
}


def trial(server_url: str, mock: object, base: str, path: str, wait: str) -> float:
    model = f"{base}+tag-{uuid.uuid4().hex[:8]}"
    body: dict[str, object] = {"message": "x", "model": f"openai/{model}"}
    if path.startswith("/v1"):
        body = {"model": f"openai/{model}", "messages": [{"role": "user", "content": "x"}]}
    sock = open_request(server_url, path, body)
    if wait == "sleep":
        time.sleep(COMMIT_DEADLINE / 3)
    elif wait == "headers":
        read_until(sock, b"\r\n\r\n")
    else:
        read_until(sock, b'"type":"token"')
    closed_at = time.time()
    sock.close()
    return upstream_gone_after(mock, model, closed_at) * 1000  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, mock_upstream(Path(tmp), ttft=0.05, tps=40) as mock:
        config = (
            f"[streams]\ncommit_deadline = {COMMIT_DEADLINE}\n"
            f'[upstreams.openai]\nkind = "openai"\nbase_url = "{mock.url}/v1"\n'
        )
        with real_server(Path(tmp), config) as server:
            print(f"cancel lag, client abort -> upstream closed, {args.trials} trials a phase")
            for phase, (base, path, wait) in PHASES.items():
                lags = sorted(trial(server.url, mock, base, path, wait) for _ in range(args.trials))
                p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
                print(
                    f"  {phase:42s} p50 {statistics.median(lags):6.1f} ms  "
                    f"p99 {p99:6.1f} ms  max {lags[-1]:6.1f} ms"
                )


if __name__ == "__main__":
    main()
