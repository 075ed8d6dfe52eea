"""Against a real `tokenrelay serve`: arrival spread, disconnect, SIGTERM, the startup line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.realserver import RealServer, real_server
from tokenrelay.sse import SSEDecoder

pytestmark = pytest.mark.server

CONFIG = (
    "[sim]\nttft = 0.1\ntokens_per_second = 40.0\njitter = 0.2\n[streams]\ndrain_timeout = 1.0\n"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    with real_server(tmp_path_factory.mktemp("server"), CONFIG) as running:
        yield running


def _read_events(response: httpx.Response) -> Iterator[tuple[float, dict[str, object]]]:
    decoder = SSEDecoder()
    for chunk in response.iter_raw():
        arrived = time.monotonic()
        for event in decoder.feed(chunk):
            yield arrived, orjson.loads(event.data)


def test_startup_line_says_sim_and_url(server: RealServer) -> None:
    first = server.log().splitlines()[0]
    assert "simulator" in first
    assert "sim/default" in first
    assert server.url in first


def test_tokens_arrive_one_by_one(server: RealServer) -> None:
    """Measure the spread of arrival times: a buffering server delivers them all at once."""
    body = {"message": "Explain streaming", "model": "sim/default", "max_tokens": 30}
    with httpx.stream("POST", f"{server.url}/api/chat/stream", json=body, timeout=30) as response:
        arrivals = [t for t, e in _read_events(response) if e["type"] == "token"]
    assert len(arrivals) == 30
    distinct_reads = len(set(arrivals))
    assert distinct_reads >= 20, f"tokens came in {distinct_reads} reads, not one by one"
    # The sim waits at least 0.8/40 s between tokens; if they are relayed as produced, the
    # arrivals span at least that much. Lateness only widens it, so this holds under load.
    assert arrivals[-1] - arrivals[0] >= 29 * 0.8 / 40


def test_disconnect_while_waiting_for_first_token_cancels(server: RealServer) -> None:
    body = {"message": "x", "model": "sim/slow-start"}
    with httpx.stream("POST", f"{server.url}/api/chat/stream", json=body, timeout=30) as response:
        stream_id = response.headers["x-stream-id"]
        events = _read_events(response)  # keep a reference: collecting it closes the response
        assert next(events)[1]["type"] == "start"
        assert server.health()["active_streams"] == 1
    # The connection is closed now, 30 s before the sim's first token would come.
    server.wait_for("producer cancelled", lambda: server.health()["active_streams"] == 0)
    server.wait_for(
        "log line", lambda: f"{stream_id} cancelled: client_disconnected" in server.log()
    )


def test_sigterm_gives_every_open_stream_a_terminal_event(tmp_path: Path) -> None:
    with real_server(tmp_path, CONFIG) as srv:
        endings: list[dict[str, object]] = []
        readers = []
        for model in ["sim/slow-start", "sim/default+endless", "sim/default"]:
            started = threading.Event()

            def follow(model: str = model, started: threading.Event = started) -> None:
                body = {"message": "x", "model": model, "max_tokens": 20}
                with httpx.stream("POST", f"{srv.url}/api/chat/stream", json=body, timeout=30) as r:
                    for _, event in _read_events(r):
                        started.set()
                        if event["type"] in ("done", "error", "cancelled"):
                            endings.append(event)

            reader = threading.Thread(target=follow)
            reader.start()
            started.wait(10)
            readers.append(reader)
        # uvicorn re-raises the signal once it has shut down gracefully, as Unix servers do.
        assert srv.terminate() in (0, -15)
        assert "Application shutdown complete" in srv.log()
        for reader in readers:
            reader.join(10)
        assert len(endings) == 3
        assert {e["type"] for e in endings} <= {"done", "error"}
        assert any(e.get("error_type") == "server_shutdown" and e["retryable"] for e in endings)
        assert "draining" in srv.log()


def test_the_served_app_freezes_start_up_objects_and_collects_young_ones_less_often() -> None:
    """`tokenrelay serve`'s factory tunes the collector (server/app.py tune_gc); checked in a
    fresh interpreter, since it changes process-wide settings."""
    script = (
        "import gc; from tokenrelay.server.app import GC_YOUNG_THRESHOLD, serve_app; "
        "serve_app(); "
        "print(gc.get_threshold()[0] == GC_YOUNG_THRESHOLD > 700, gc.get_freeze_count() > 1000)"
    )
    env = {k: v for k, v in os.environ.items() if k != "TOKENRELAY_CONFIG"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.stdout.split() == ["True", "True"], done.stderr


@pytest.mark.parametrize("path", ["/api/chat/stream", "/v1/chat/completions", "/api/chat"])
def test_a_persistent_429_keeps_its_status_with_the_default_settings(
    server: RealServer, path: str
) -> None:
    """Two retries after `Retry-After: 1` outlast the 2 s commit deadline; the deadline waits
    for them, so the caller still gets the 429 the README promises, with its Retry-After."""
    body: dict[str, object] = {"model": "sim/fast+rate-limit", "message": "hi"}
    if path.startswith("/v1"):
        body = {"model": body["model"], "messages": [{"role": "user", "content": "hi"}]}
        body["stream"] = True
    started = time.monotonic()
    r = httpx.post(f"{server.url}{path}", json=body, timeout=30)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1"
    assert r.headers["content-type"] == "application/json"
    assert time.monotonic() - started > 2.0  # both retries were made (1 s, then 1 s or more)


def test_requests_during_the_drain_get_503_not_a_refused_connection(tmp_path: Path) -> None:
    """The listener stays open while streams drain: a load balancer's health check reads
    "draining", and a new request gets the documented 503 with Retry-After. A second signal
    ends what still runs at once."""
    config = CONFIG.replace("drain_timeout = 1.0", "drain_timeout = 30.0")
    with real_server(tmp_path, config) as srv:
        body = {"message": "x", "model": "sim/default+endless"}
        with httpx.stream("POST", f"{srv.url}/api/chat/stream", json=body, timeout=30) as r:
            events = _read_events(r)
            next(events)  # the stream is under way
            srv.process.send_signal(signal.SIGTERM)
            srv.wait_for("draining", lambda: "draining" in srv.log(), 5)
            health = httpx.get(f"{srv.url}/healthz", timeout=5)
            assert health.status_code == 503
            assert health.json()["status"] == "draining"
            refused = httpx.post(f"{srv.url}/api/chat/stream", json=body, timeout=5)
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "5"
            assert refused.json()["error"]["type"] == "service_unavailable"
            second = time.monotonic()
            srv.process.send_signal(signal.SIGTERM)  # not the 30 s drain: now
            ending = next(e for _, e in events if e["type"] in ("done", "error", "cancelled"))
        assert ending.get("error_type") == "server_shutdown"
        assert srv.process.wait(15) in (0, -15)
        assert time.monotonic() - second < 10
