"""A Redis outage, against a real `tokenrelay serve` and a real redis-server stopped mid-stream.

Found on 2026-12-01: a restart cut readers with no terminal event, every endpoint answered
500 with no Retry-After (native-shaped on /v1), /healthz said "ok", and the producer logged
an ERROR per token.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis as redis_client

from tests.realserver import RealServer, real_server
from tests.services import RedisProcess, redis_process

pytestmark = pytest.mark.server

MESSAGES = [{"role": "user", "content": "Explain TCP handshakes"}]


def _config(redis: RedisProcess, grace: float, lease: float = 10.0) -> str:
    return f"""
[redis]
url = "{redis.url}"
grace = {grace}
lease = {lease}
[sim]
ttft = 0.0
tokens_per_second = 40.0
jitter = 0.0
"""


class _Reader:
    """An open native stream, read event by event."""

    def __init__(self, server: RealServer, max_tokens: int) -> None:
        body = {"model": "sim/default", "message": "Explain TCP handshakes"}
        self._client = httpx.Client(timeout=30)
        request = self._client.build_request(
            "POST", f"{server.url}/api/chat/stream", json={**body, "max_tokens": max_tokens}
        )
        self._response = self._client.send(request, stream=True)
        assert self._response.status_code == 200
        self._lines = self._response.iter_lines()
        self.events: list[dict[str, Any]] = []

    def next_event(self) -> dict[str, Any]:
        event: dict[str, Any] = {}
        for line in self._lines:
            if line.startswith("id: "):
                event["_id"] = line[4:]
            elif line.startswith("data: "):
                event.update(orjson.loads(line[6:]))
            elif not line and "type" in event:
                self.events.append(event)
                return event
        raise AssertionError("the stream ended without a terminal event")

    def until(self, count: int, kind: str = "token") -> None:
        while sum(e["type"] == kind for e in self.events) < count:
            self.next_event()

    def to_the_end(self) -> dict[str, Any]:
        while (event := self.next_event())["type"] not in ("done", "error", "cancelled"):
            pass
        return event

    def close(self) -> None:
        self._response.close()
        self._client.close()


def _ids_in_order(events: list[dict[str, Any]]) -> list[int]:
    return [int(e["_id"].rsplit(":", 1)[1]) for e in events]


def _dirs(tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    (tmp_path / "server").mkdir()


@pytest.fixture
def outage(tmp_path: Path) -> Iterator[tuple[RedisProcess, RealServer]]:
    _dirs(tmp_path)
    with (
        redis_process(tmp_path / "redis") as redis,
        real_server(tmp_path / "server", _config(redis, grace=1.0)) as server,
    ):
        yield redis, server


def test_an_outage_ends_readers_honestly_and_refuses_new_work(
    outage: tuple[RedisProcess, RealServer],
) -> None:
    redis, server = outage
    reader = _Reader(server, max_tokens=400)
    try:
        reader.until(5)
        redis.stop()
        started = time.monotonic()
        ending = reader.to_the_end()
        waited = time.monotonic() - started
    finally:
        reader.close()
    assert ending["type"] == "error"
    assert ending["error_type"] == "store_unavailable"
    assert ending["retryable"] is True
    assert waited < 10  # the grace (1 s) and a read slice, not a hang
    ids = _ids_in_order(reader.events)
    assert ids[:-1] == list(range(1, len(ids)))  # in order, nothing doubled
    assert ids[-1] == ids[-2]  # the ending was never stored: it repeats the last id

    # New work is refused with a 503 and Retry-After, each in its caller's dialect.
    native = httpx.post(f"{server.url}/api/chat/stream", json={"message": "hi"}, timeout=10)
    assert native.status_code == 503
    assert native.headers["retry-after"] == "2"
    assert native.json()["error"]["type"] == "store_unavailable"
    openai = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "sim/fast", "messages": MESSAGES, "stream": True},
        timeout=10,
    )
    assert openai.status_code == 503
    assert openai.json()["error"]["code"] == "store_unavailable"
    anthropic = httpx.post(
        f"{server.url}/v1/messages",
        json={"model": "sim/fast", "messages": MESSAGES, "max_tokens": 5},
        timeout=10,
    )
    assert anthropic.status_code == 503
    assert anthropic.json()["type"] == "error"
    health = httpx.get(f"{server.url}/healthz", timeout=10)
    assert health.status_code == 503
    assert health.json()["store"] == "unreachable"

    redis.start()
    server.wait_for(
        "healthz ready", lambda: httpx.get(f"{server.url}/healthz").status_code == 200, 10
    )
    again = httpx.post(f"{server.url}/api/chat", json={"message": "hi", "model": "sim/fast"})
    assert again.status_code == 200

    # A line per change of state, the last one within _Health.QUIET (5 s) of the one before.
    server.wait_for("the recovery line", lambda: "redis serves again" in server.log(), 10)
    log = server.log()
    assert log.count("redis is unavailable") == 1
    assert log.count("redis serves again") == 1
    assert "Traceback" not in log
    assert "Exception in ASGI application" not in log


@pytest.mark.parametrize("persist", [True, False], ids=["data-kept", "data-lost"])
def test_a_restart_within_the_grace(tmp_path: Path, persist: bool) -> None:
    """Back within the grace with its data: the stream carries on, every token once. Back
    empty: readers and producer end it honestly, and nothing is recreated without expiry."""
    _dirs(tmp_path)
    with (
        redis_process(tmp_path / "redis", persist=persist) as redis,
        real_server(tmp_path / "server", _config(redis, grace=5.0)) as server,
    ):
        reader = _Reader(server, max_tokens=120)
        try:
            reader.until(5)
            redis.stop()
            redis.start()
            ending = reader.to_the_end()
        finally:
            reader.close()
        ids = _ids_in_order(reader.events)
        if persist:
            assert ending["type"] == "done"
            assert ids == list(range(1, len(ids) + 1))
            assert sum(e["type"] == "token" for e in reader.events) == 120
        else:
            assert ending["type"] == "error"
            assert ending["error_type"] == "store_unavailable"
            server.wait_for(
                "the producer stopped", lambda: server.health()["active_streams"] == 0, 10
            )
            assert httpx.get(f"{server.url}/healthz").json()["store"] == "ok"
        assert "Traceback" not in server.log()
        with redis_client.Redis.from_url(redis.url) as check:  # every key still expires
            forever = [key for key in check.scan_iter() if check.pttl(key) < 0]
            assert forever == []


def test_redis_refusing_writes_ends_the_stream_once_and_readers_learn_it(tmp_path: Path) -> None:
    """Out of memory: reads work, writes are refused. The stream ends, its readers get a
    retryable store_unavailable, and the log says so in a few lines, not one per token."""
    _dirs(tmp_path)
    with (
        redis_process(tmp_path / "redis") as redis,
        real_server(tmp_path / "server", _config(redis, grace=1.0, lease=1.0)) as server,
    ):
        reader = _Reader(server, max_tokens=400)
        try:
            reader.until(5)
            with redis_client.Redis.from_url(redis.url) as admin:
                admin.config_set("maxmemory", "1")
            ending = reader.to_the_end()
        finally:
            reader.close()
        assert ending["type"] == "error"
        assert ending["error_type"] == "store_unavailable"
        ids = _ids_in_order(reader.events)
        assert ids[:-1] == list(range(1, len(ids)))  # no gap: nothing after the refusal
        log = server.log()
        assert log.count("tokenrelay.redis") <= 4
        assert "Traceback" not in log
        assert "Exception in ASGI application" not in log


def test_an_outage_with_nothing_running_is_one_line_however_long(
    outage: tuple[RedisProcess, RealServer],
) -> None:
    """Lease renewals with no stream to renew touch no Redis, and must not read as news that
    Redis is back (they did, every 3.3 s)."""
    redis, server = outage
    redis.stop()
    deadline = time.monotonic() + 8  # more than two renewal ticks (lease / 3)
    while time.monotonic() < deadline:
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 503
        time.sleep(0.5)
    log = server.log()
    assert log.count("redis is unavailable") == 1
    assert "redis serves again" not in log
