"""`tokenrelay bench` against real servers: what it reports must be true of what happened."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.realserver import MockUpstream, RealServer, real_server
from tests.services import nginx_proxy
from tokenrelay.bench.html import render
from tokenrelay.bench.prompts import Prompts
from tokenrelay.bench.request import Result
from tokenrelay.bench.stats import bursts, distribution

pytestmark = pytest.mark.server

QUICK_SIM = "[sim]\nttft = 0.02\ntokens_per_second = 200.0\n"
SVG = {"svg": "http://www.w3.org/2000/svg"}


def bench(*args: str, expect: int = 0, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tokenrelay", "bench", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    assert done.returncode == expect, done.stderr
    return json.loads(done.stdout) if expect == 0 else {"stderr": done.stderr}


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream) -> Iterator[RealServer]:
    """tokenrelay with the sim made quick, and the mock upstream as its `openai` provider."""
    config = QUICK_SIM + f'[upstreams.openai]\nkind = "openai"\nbase_url = "{mock.url}/v1"\n'
    with real_server(tmp_path_factory.mktemp("relay"), config) as server:
        yield server


@pytest.fixture(scope="module")
def paced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    """The sim with a first token slow enough (200 ms, ±35% jitter) to see its spread."""
    config = "[sim]\nttft = 0.2\ntokens_per_second = 200.0\n"
    with real_server(tmp_path_factory.mktemp("paced"), config) as server:
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


def test_ttft_varies_from_request_to_request_against_the_sim(paced: RealServer) -> None:
    """The bug: one prompt for every request, so the sim (whose timing is seeded by the
    prompt) paced them all alike, and TTFT was one value (p50 = p99 = 221 ms)."""
    report = bench(
        paced.url,
        "--model",
        "sim/default",
        "--requests",
        "24",
        "--concurrency",
        "4",
        "--max-tokens",
        "5",
    )
    assert report["load"]["prompts"] == "varied"
    ttfts = report["raw"]["c=4"]["ttft_ms"]
    assert len(ttfts) == 24
    # 200 ms ± 35%: 24 draws spread over ~140 ms; lateness only adds to each, never takes off
    assert max(ttfts) - min(ttfts) > 50
    figures = report["phases"][0]["ttft_ms"]
    assert figures["p50"] < figures["p99"]


def _asked(mock: MockUpstream, seed: str, tag: str) -> list[str]:
    """The questions a bench run with `seed` asked the mock, in order (one stream at a time)."""
    bench(
        mock.url,
        "--api",
        "openai",
        "--model",
        f"fast+tag-{tag}",
        "--requests",
        "8",
        "--concurrency",
        "1",
        "--max-tokens",
        "2",
        "--seed",
        seed,
    )
    return [body["messages"][-1]["content"] for body in mock.sent(tag)]


def test_the_same_seed_asks_the_same_questions(mock: MockUpstream) -> None:
    first, again, other = (
        _asked(mock, "5", "seed5a"),
        _asked(mock, "5", "seed5b"),
        _asked(mock, "6", "seed6"),
    )
    assert len(first) == 8
    assert first == again
    assert len(set(first)) > 1
    assert other != first


def test_prompts_are_drawn_from_the_seed_or_fixed() -> None:
    def draw(seed: int, fixed: str | None = None) -> list[str]:
        prompts = Prompts(seed, fixed)
        return [prompts.next() for _ in range(50)]

    assert draw(0) == draw(0)
    assert draw(0) != draw(1)
    assert len(set(draw(0))) > 40
    assert set(draw(0, fixed="Explain streaming relays")) == {"Explain streaming relays"}


def test_bench_finds_the_server_pid_by_itself(paced: RealServer) -> None:
    assert paced.health()["pid"] == paced.process.pid
    report = bench(paced.url, "--model", "sim/fast", "--requests", "3", "--server-pid", "auto")
    assert report["target"]["server_pid"] == paced.process.pid
    server = report["phases"][0]["server"]
    assert server["rss_mib_max"] > 0  # read from /proc for that process
    assert "cpu_seconds" in server


def test_auto_pid_is_refused_when_the_server_names_none(mock: MockUpstream) -> None:
    args = ("--api", "openai", "--model", "fast", "--requests", "1", "--server-pid", "auto")
    refused = bench(mock.url, *args, expect=2)
    assert "names no pid" in refused["stderr"]


def _without_matplotlib(tmp_path: Path) -> dict[str, str]:
    """An environment where `import matplotlib` fails, as on an install without it."""
    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("matplotlib is not installed")\n')
    path = os.pathsep.join(filter(None, [str(shadow.parent), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def _charts(page: str) -> dict[str, ET.Element]:
    charts = [ET.fromstring(svg) for svg in re.findall(r"<svg.*?</svg>", page, re.DOTALL)]
    return {chart.findtext("svg:title", namespaces=SVG) or "": chart for chart in charts}


def _axis_names(chart: ET.Element) -> list[str]:
    return [
        text.text or ""
        for panel in chart.findall("svg:g[@class='panel']", SVG)
        for text in panel.findall("svg:text[@class='axis-name']", SVG)
    ]


def test_html_report_is_inline_svg_without_matplotlib(
    relay: RealServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = tmp_path / "report.html"
    report = bench(
        relay.url,
        "--model",
        "sim/fast",
        "--concurrency",
        "1,2",
        "--requests",
        "4",
        "--server-pid",
        "auto",
        "--html",
        str(page),
        env=_without_matplotlib(tmp_path),
    )
    text = page.read_text()
    assert "<script" not in text
    assert "http://cdn" not in text
    charts = _charts(text)
    assert list(charts) == [
        "time to first token, by request",
        "end-to-end latency, by request",
        "latency and throughput against concurrency",
        "the server over time",
    ]
    # one quantity per panel, each with its unit; none shares an axis with another
    assert _axis_names(charts["the server over time"]) == [
        "server CPU (% of one core)",
        "server memory, RSS (MiB)",
        "open connections to the server's port",
    ]
    for panel in charts["the server over time"].findall("svg:g[@class='panel']", SVG):
        lowest = panel.findtext("svg:text[@class='y-tick']", namespaces=SVG)
        assert float(lowest or "nan") == 0
    assert _axis_names(charts["latency and throughput against concurrency"]) == [
        "time to first token (ms)",
        "output tokens per second (all streams)",
    ]
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # in this process too: import fails
    assert render(report) == text


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--requests", "2", "--api", "openai", "--drop-rate", "0.5"], "--drop-rate needs"),
        (["--concurrency", "2"], "--duration or --requests"),
        (["--requests", "2", "--cancel-rate", "0.7", "--drop-rate", "0.7"], "cannot exceed 1"),
        (["--requests", "2", "--server-pid", "server"], "a process id, or auto"),
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
