"""Two replicas on a Redis Cluster of three nodes: a stream resumed and cancelled from the other
replica, a replica's death taken over, and an API key made, used and revoked. Every key a
request touches is hash-tagged, so that what one script or transaction touches shares a slot."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.abort import open_request, read_until
from tests.conftest import sse_events
from tests.realserver import RealServer, real_server
from tests.server.test_keys import keys_command
from tests.server.test_takeover import SEAM, whole_events_of
from tests.services import redis_cluster

pytestmark = pytest.mark.server


def _config(cluster_url: str) -> str:
    return f"""
[redis]
url = "{cluster_url}"
cluster = true
lease = 1.0
on_producer_lost = "continue"
[streams]
keepalive = 0.3
[sim]
ttft = 0.05
tokens_per_second = 60.0
jitter = 0.0
"""


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A cluster of this module's own: the key it makes must not reach other tests."""
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as url:
        yield url


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory, cluster_url: str
) -> Iterator[tuple[RealServer, RealServer]]:
    config = _config(cluster_url)
    with (
        real_server(tmp_path_factory.mktemp("a"), config) as a,
        real_server(tmp_path_factory.mktemp("b"), config) as b,
    ):
        yield a, b


def _started(server: RealServer, body: dict[str, object]) -> tuple[str, str]:
    """Start a detached stream, read up to its third token; its id and the last event's id."""
    creator = open_request(server.url, "/api/chat/stream", body)
    head = read_until(creator, b'"type":"token"')
    while head.count(b'"type":"token"') < 3:
        head += creator.recv(65536)
    creator.close()
    stream_id, events = whole_events_of(head)
    return stream_id, events[-1]["_id"]


BODY: dict[str, object] = {
    "message": "Explain TCP",
    "model": "sim/default",
    "max_tokens": 60,
    "on_disconnect": "detach",
}


def test_start_on_a_resume_on_b(pair: tuple[RealServer, RealServer]) -> None:
    a, b = pair
    stream_id, last_id = _started(a, BODY)
    rest = sse_events(
        httpx.get(
            f"{b.url}/api/streams/{stream_id}", headers={"last-event-id": last_id}, timeout=30
        ).content
    )
    seq = int(last_id.rsplit(":", 1)[1])
    assert [e["_id"] for e in rest] == [f"{stream_id}:{seq + i}" for i in range(1, len(rest) + 1)]
    assert rest[-1]["type"] == "done"
    assert rest[-1]["token_count"] == 60


def test_cancel_on_b_ends_the_stream_on_a(pair: tuple[RealServer, RealServer]) -> None:
    a, b = pair
    stream_id, _ = _started(a, {**BODY, "model": "sim/default+endless"})
    assert httpx.delete(f"{b.url}/api/streams/{stream_id}", timeout=10).status_code == 202
    events = sse_events(httpx.get(f"{a.url}/api/streams/{stream_id}", timeout=30).content)
    assert events[-1]["type"] == "cancelled"


def test_a_dead_replicas_stream_is_taken_over(
    tmp_path: Path, cluster_url: str, pair: tuple[RealServer, RealServer]
) -> None:
    with real_server(tmp_path, _config(cluster_url)) as doomed:
        creator = open_request(doomed.url, "/api/chat/stream", BODY)
        head = read_until(creator, b'"type":"token"')
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait()
        creator.close()
    stream_id, before = whole_events_of(head)
    after = sse_events(
        httpx.get(
            f"{pair[1].url}/api/streams/{stream_id}",
            headers={"last-event-id": before[-1]["_id"]},
            timeout=30,
        ).content
    )
    assert [e.get("message") for e in after if e["type"] == "status"] == [SEAM]
    assert after[-1]["type"] == "done"


def test_an_api_key_is_made_used_and_revoked_on_the_cluster(
    pair: tuple[RealServer, RealServer],
) -> None:
    a, b = pair
    config = a.log_path.parent / "tokenrelay.toml"
    made = keys_command(config, "create", "cluster-team", "--max-concurrent", "2")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    body = {"message": "hi", "model": "sim/fast"}

    def status(server: RealServer, headers: dict[str, str]) -> int:
        return httpx.post(f"{server.url}/api/chat", json=body, headers=headers).status_code

    with_key = {"authorization": f"Bearer {key}"}
    b.wait_for("keys required", lambda: status(b, {}) == 401, 5)
    assert status(b, with_key) == 200  # made through one client, honoured by both replicas
    assert status(a, with_key) == 200
    # Another key, so that keys stay required once this one is gone (with none, none is).
    assert keys_command(config, "create", "cluster-other").returncode == 0
    revoked = keys_command(config, "revoke", "cluster-team")
    assert revoked.returncode == 0, revoked.stderr
    a.wait_for("the revoke", lambda: status(a, with_key) == 401, 5)
    time.sleep(1.5)  # past the replicas' one-second cache of whether any key exists
    assert status(a, with_key) == 401
    assert status(b, with_key) == 401
