"""`tokenrelay serve --workers 2` with Redis: a resume or a cancel by id reaches its stream
from either worker (each request on a new connection, which the kernel spreads)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.realserver import real_server

pytestmark = pytest.mark.server


def test_resume_and_cancel_reach_a_stream_from_any_worker(tmp_path: Path, redis_url: str) -> None:
    config = f'[redis]\nurl = "{redis_url}"\n[sim]\nttft = 0.0\ntokens_per_second = 40.0\n'
    with real_server(tmp_path, config, workers=2) as server:
        # a worker answers, but names `tokenrelay serve`: the process to watch and to signal
        assert server.health()["pid"] == server.process.pid
        body = {"message": "hi", "model": "sim/default+endless", "on_disconnect": "detach"}
        with httpx.stream("POST", f"{server.url}/api/chat/stream", json=body, timeout=30) as r:
            stream_id = r.headers["x-stream-id"]
        for _ in range(6):  # new connections: some land on the other worker
            with (
                httpx.Client(timeout=30) as fresh,
                fresh.stream(
                    "GET",
                    f"{server.url}/api/streams/{stream_id}",
                    headers={"last-event-id": f"{stream_id}:1"},
                ) as resumed,
            ):
                assert resumed.status_code == 200
                first = next(line for line in resumed.iter_lines() if line.startswith("id: "))
                assert first == f"id: {stream_id}:2"
        with httpx.Client(timeout=10) as fresh:
            assert fresh.delete(f"{server.url}/api/streams/{stream_id}").status_code == 202
        ended = httpx.get(
            f"{server.url}/api/streams/{stream_id}",
            headers={"last-event-id": f"{stream_id}:1"},
            timeout=30,
        )
        assert '"type":"cancelled"' in ended.text


def test_workers_whose_supervisor_is_killed_shut_down(tmp_path: Path, redis_url: str) -> None:
    """Orphaned, they would go on holding the port with nothing left to stop them."""
    config = f'[redis]\nurl = "{redis_url}"\n[sim]\nttft = 0.0\n'
    with real_server(tmp_path, config, workers=2) as server:
        supervisor = server.process.pid
        workers = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
        assert len(workers) >= 2
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in workers):
            assert time.monotonic() < deadline, "a worker outlived its supervisor"
            time.sleep(0.1)


def _alive(pid: str) -> bool:
    """Running, neither gone nor a zombie waiting for whoever adopted it to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"
