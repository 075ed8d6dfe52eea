"""GET /metrics: each series moves when the thing it counts happens, and parses as Prometheus."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from tests.conftest import AsgiExchange, drive, quick_settings, sse_events
from tests.realserver import MockUpstream, real_server
from tokenrelay import metrics_workers
from tokenrelay.metrics import Histogram
from tokenrelay.providers.openai import OpenAIProvider
from tokenrelay.providers.sim import SimProvider, SimTiming
from tokenrelay.server.app import create_app
from tokenrelay.settings import UpstreamSection

pytestmark = pytest.mark.anyio

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def test_histogram_buckets_are_le_and_cumulative() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        histogram.observe(value)
    assert histogram.cumulative() == [("0.1", 2.0), ("1.0", 4.0), ("+Inf", 5.0)]
    assert histogram.total == pytest.approx(8.65)


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def test_a_finished_stream_counts_tokens_ttft_gaps_and_its_ending(
    client: httpx.AsyncClient,
) -> None:
    before = await scrape(client)
    body = {"message": "hi", "model": "sim/fast", "max_tokens": 30}
    response = await client.post("/api/chat/stream", json=body)
    assert sse_events(response.content)[-1]["type"] == "done"
    after = await scrape(client)
    assert moved(before, after, "tokenrelay_tokens_total") == 30
    assert moved(before, after, "tokenrelay_ttft_seconds_count") == 1
    assert moved(before, after, "tokenrelay_inter_token_seconds_count") == 29
    assert moved(before, after, "tokenrelay_streams_total", state="done", error_type="") == 1
    assert value(after, "tokenrelay_active_streams") == value(before, "tokenrelay_active_streams")


async def test_errors_are_counted_by_type(client: httpx.AsyncClient) -> None:
    before = await scrape(client)
    body = {"message": "hi", "model": "sim/fast+error-after-3"}
    response = await client.post("/api/chat/stream", json=body)
    assert sse_events(response.content)[-1]["type"] == "error"
    after = await scrape(client)
    labels = {"state": "error", "error_type": "api_error"}
    assert moved(before, after, "tokenrelay_streams_total", **labels) == 1


async def test_a_cancel_counts_its_phase_and_the_upstream_close_latency(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    before = await scrape(client)
    exchange = AsgiExchange()
    body = orjson.dumps({"message": "x", "model": "sim/slow-start"})
    task = asyncio.create_task(drive(app, exchange, "POST", "/api/chat/stream", body))
    await asyncio.wait_for(exchange.started.wait(), 1.0)
    during = await scrape(client)
    assert moved(before, during, "tokenrelay_active_streams") == 1
    assert moved(before, during, "tokenrelay_active_subscribers") == 1
    response = await client.delete(f"/api/streams/{exchange.header('x-stream-id')}")
    assert response.status_code == 202
    await asyncio.wait_for(task, 2.0)
    after = await scrape(client)
    phase = {"phase": "before_first_token"}
    reason = {**phase, "reason": "cancelled_by_request"}
    assert moved(before, after, "tokenrelay_cancellations_total", **reason) == 1
    assert moved(before, after, "tokenrelay_cancel_upstream_close_seconds_count", **phase) == 1
    assert moved(before, after, "tokenrelay_streams_total", state="cancelled", error_type="") == 1
    for gauge in ("tokenrelay_active_streams", "tokenrelay_active_subscribers"):
        assert value(after, gauge) == value(before, gauge)


async def test_resumes_are_counted(client: httpx.AsyncClient) -> None:
    body = {"message": "hi", "model": "sim/fast", "max_tokens": 5}
    events = sse_events((await client.post("/api/chat/stream", json=body)).content)
    before = await scrape(client)
    headers = {"last-event-id": events[2]["_id"]}
    response = await client.get(f"/api/streams/{events[0]['stream_id']}", headers=headers)
    assert sse_events(response.content)[-1]["type"] == "done"
    after = await scrape(client)
    assert moved(before, after, "tokenrelay_resumes_total") == 1


@pytest.fixture
async def upstream_client(mock: MockUpstream) -> AsyncIterator[httpx.AsyncClient]:
    settings = quick_settings(max_retries=1)
    providers = [
        SimProvider(SimTiming(ttft=0.01, tokens_per_second=500.0)),
        OpenAIProvider("openai", UpstreamSection(base_url=f"{mock.url}/v1"), "sk-test-metrics"),
    ]
    app: Starlette = create_app(settings, providers=providers)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),  # closes the upstream's connection pool afterwards
        httpx.AsyncClient(transport=transport, base_url="http://tokenrelay.test") as c,
    ):
        yield c


async def test_upstream_requests_by_status_and_retries(upstream_client: httpx.AsyncClient) -> None:
    before = await scrape(upstream_client)
    ok = {"message": "hi", "model": "openai/fast", "max_tokens": 3}
    failing = {"message": "hi", "model": "openai/fast+status-500"}
    for body in (ok, failing):
        await upstream_client.post("/api/chat/stream", json=body)
    await asyncio.sleep(0)
    after = await scrape(upstream_client)
    requests = "tokenrelay_upstream_requests_total"
    assert moved(before, after, requests, provider="openai", status="200") == 1
    assert moved(before, after, requests, provider="openai", status="500") == 2  # one retry
    assert moved(before, after, "tokenrelay_retries_total", error_type="api_error") == 1


async def test_metrics_carry_no_secrets_or_stream_ids(upstream_client: httpx.AsyncClient) -> None:
    body = {"message": "hi", "model": "openai/fast", "max_tokens": 3}
    response = await upstream_client.post("/api/chat/stream", json=body)
    text = (await upstream_client.get("/metrics")).text
    assert "sk-test-metrics" not in text
    assert response.headers["x-stream-id"] not in text  # no per-stream label: bounded series


def test_a_scrape_sums_every_worker(tmp_path: Path, redis_url: str) -> None:
    """`serve --workers 2`: requests spread over both workers; any scrape counts them all."""

    config = f'[redis]\nurl = "{redis_url}"\n[sim]\nttft = 0.0\n'
    with real_server(tmp_path, config, workers=2) as server:
        for _ in range(12):
            body = {"message": "hi", "model": "sim/fast"}
            # A new connection each time: the kernel spreads them over the workers.
            assert httpx.post(f"{server.url}/api/chat", json=body).status_code == 200
        pids = {
            line.split("[")[1].split("]")[0]
            for line in server.log().splitlines()
            if "Started server process" in line
        }
        assert len(pids) >= 2

        def done_streams() -> float:
            text = httpx.get(f"{server.url}/metrics").text
            return sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith('tokenrelay_streams_total{error_type="",state="done"}')
            )

        deadline = time.monotonic() + 5
        while done_streams() < 12 and time.monotonic() < deadline:
            time.sleep(0.2)
        # Each worker sees the other's snapshot, which is up to EVERY old: after one more
        # round of snapshots, every worker's answer is whole.
        time.sleep(metrics_workers.EVERY + 0.5)
        for _ in range(4):  # whichever worker answers the scrape
            assert done_streams() == 12


def test_snapshots_sum_counters_and_only_live_workers_gauges(tmp_path: Path) -> None:
    from tokenrelay.metrics import Metrics

    def worker(streams: int, active: int) -> Metrics:
        m = Metrics()
        for _ in range(streams):
            m.stream_ended("done")
            m.ttft.observe(0.1)
        m.active_streams = active
        m.key_tokens[("alice", "output")] = streams * 10
        return m

    alive, dead = 1, 4_000_000  # pid 1 always runs; no pid is that high
    for pid, m in ((alive, worker(3, 2)), (dead, worker(4, 5))):
        (tmp_path / f"{pid}.json").write_bytes(orjson.dumps(metrics_workers.snapshot(m)))
    total = metrics_workers.summed(worker(1, 1), tmp_path)
    assert total.streams[("done", "")] == 8  # counters: every worker, gone ones included
    assert total.active_streams == 3  # gauges: live workers only
    assert total.key_tokens[("alice", "output")] == 80
    assert total.ttft.counts[total.ttft.counts.index(8)] == 8
