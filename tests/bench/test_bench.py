"""`tokenrelay bench` against real servers: what it reports must be true of what happened."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.realserver import MockUpstream, RealServer, real_server
from tests.services import nginx_proxy
from tokenrelay.bench.request import Result
from tokenrelay.bench.stats import bursts, distribution

pytestmark = pytest.mark.server

QUICK_SIM = "[sim]\nttft = 0.02\ntokens_per_second = 200.0\n"


def bench(*args: str, expect: int = 0) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tokenrelay", "bench", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == expect, done.stderr
    return json.loads(done.stdout) if expect == 0 else {"stderr": done.stderr}


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream) -> Iterator[RealServer]:
    """tokenrelay with the sim made quick, and the mock upstream as its `openai` provider."""
    config = QUICK_SIM + f'[upstreams.openai]\nkind = "openai"\nbase_url = "{mock.url}/v1"\n'
    with real_server(tmp_path_factory.mktemp("relay"), config) as server:
        yield server


def test_a_sweep_reports_every_request_with_its_tokens_and_server_cost(relay: RealServer) -> None:
    report = bench(
        relay.url,
        "--model",
        "sim/default",
        "--concurrency",
        "1,4",
        "--requests",
        "8",
        "--max-tokens",
        "30",
        "--server-pid",
        str(relay.process.pid),
    )
    assert [p["phase"] for p in report["phases"]] == ["c=1", "c=4"]
    for phase in report["phases"]:
        assert phase["requests"] == phase["completed"] == 8
        assert phase["errors"] == {}
        assert phase["output_tokens"] == 8 * 30
        assert phase["ttft_ms"]["p50"] > 0
        assert phase["itl_ms"]["max"] >= phase["itl_ms"]["p50"]
        assert phase["server"]["cpu_seconds"] > 0
        assert phase["server"]["max_connections"] >= 1
        assert not phase["bursts"]["buffering_detected"]
    assert report["timeline"]


def test_errors_are_reported_by_type(relay: RealServer) -> None:
    report = bench(relay.url, "--model", "sim/fast+error-after-3", "--requests", "3")
    assert report["phases"][0]["errors"] == {"api_error": 3}
    report = bench(relay.url, "--model", "nosuch/model", "--requests", "2")
    (kind,) = report["phases"][0]["errors"]
    assert kind.startswith("http_4")


def test_cancels_are_verified_at_the_upstream(relay: RealServer, mock: MockUpstream) -> None:
    report = bench(
        relay.url,
        "--model",
        "openai/default",
        "--requests",
        "6",
        "--concurrency",
        "3",
        "--cancel-after-tokens",
        "3",
        "--upstream",
        mock.url,
    )
    cancel = report["phases"][0]["cancel"]
    assert cancel["cancelled"] == 6
    assert cancel["reached_upstream"] == 6
    assert cancel["not_seen"] == 0
    assert cancel["upstream_close_lag_ms"]["max"] < 5000


def test_drops_are_resumed_and_checked_byte_for_byte(relay: RealServer) -> None:
    report = bench(
        relay.url,
        "--model",
        "sim/default",
        "--requests",
        "6",
        "--concurrency",
        "3",
        "--max-tokens",
        "40",
        "--drop-rate",
        "1",
        "--seed",
        "7",
    )
    phase = report["phases"][0]
    assert phase["errors"] == {}
    assert phase["drop"]["dropped"] == phase["drop"]["exact"] == 6
    assert phase["output_tokens"] == 6 * 40  # nothing lost, nothing doubled


def test_open_loop_sends_the_requested_count(relay: RealServer) -> None:
    report = bench(relay.url, "--model", "sim/fast", "--rate", "50", "--requests", "10")
    assert report["phases"][0]["phase"] == "50/s"
    assert report["phases"][0]["completed"] == 10


def test_the_openai_api_through_nginx_and_buffering_is_detected(
    tmp_path: Path, mock: MockUpstream
) -> None:
    with nginx_proxy(tmp_path, mock.url) as (url, _):
        clean = bench(
            url, "--api", "openai", "--model", "default", "--requests", "2", "--max-tokens", "120"
        )
    with nginx_proxy(tmp_path, mock.url, buffered=True) as (url, _):
        held = bench(
            url, "--api", "openai", "--model", "default", "--requests", "2", "--max-tokens", "120"
        )
    assert clean["phases"][0]["completed"] == held["phases"][0]["completed"] == 2
    assert not clean["phases"][0]["bursts"]["buffering_detected"]
    assert held["phases"][0]["bursts"]["buffering_detected"]


def test_html_report_is_self_contained(relay: RealServer, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    bench(
        relay.url,
        "--model",
        "sim/fast",
        "--concurrency",
        "1,2",
        "--requests",
        "4",
        "--server-pid",
        str(relay.process.pid),
        "--html",
        str(page),
    )
    text = page.read_text()
    assert text.count("<svg") == 4  # TTFT, E2E, the sweep, the server timeline
    assert "<script" not in text
    assert "http://cdn" not in text


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--requests", "2", "--api", "openai", "--drop-rate", "0.5"], "--drop-rate needs"),
        (["--concurrency", "2"], "--duration or --requests"),
        (["--requests", "2", "--cancel-rate", "0.7", "--drop-rate", "0.7"], "cannot exceed 1"),
    ],
)
def test_options_that_cannot_work_are_refused(args: list[str], complaint: str) -> None:
    assert complaint in bench("http://127.0.0.1:9", *args, expect=2)["stderr"]


def _result(tokens: int, reads: int, took: float) -> Result:
    return Result(0.0, ended=took, tokens=tokens, reads=reads)


def test_bursts_are_judged_only_on_paced_streams() -> None:
    assert bursts([_result(100, 1, 2.0)])["buffering_detected"]  # held whole to the end
    assert bursts([_result(100, 5, 2.0)])["buffering_detected"]
    assert not bursts([_result(100, 90, 2.0)])["buffering_detected"]
    unpaced = bursts([_result(100, 2, 0.01)])  # a no-delay upstream: nothing to judge
    assert unpaced["streams_judged"] == 0
    assert not unpaced["buffering_detected"]


def test_percentiles_are_nearest_rank() -> None:
    figures = distribution([i / 1000 for i in range(1, 101)])
    assert figures is not None
    assert (figures["p50"], figures["p99"], figures["max"]) == (50.0, 99.0, 100.0)
    assert distribution([]) is None
