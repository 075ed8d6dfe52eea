"""Process metrics: plain counters on the hot path, Prometheus text only when scraped.

The producer counts every token, so what it touches per token must cost next to nothing: an
integer increment and a `bisect` into a bucket list, where `prometheus_client.Histogram.observe`
takes a lock. `prometheus_client` still writes the exposition format, from these numbers, when
`GET /metrics` asks (`MetricsCollector`).

One `METRICS` per process. With `tokenrelay serve --workers N` each worker counts its own,
and a scrape answers with the sum of every worker's (metrics_workers.py).

    tokenrelay_active_streams                  gauge     generations running here
    tokenrelay_active_subscribers              gauge     connections reading a stream here
    tokenrelay_ttft_seconds                    histogram stream start to first token
    tokenrelay_inter_token_seconds             histogram between consecutive tokens
    tokenrelay_tokens_total                    counter   tokens relayed (produced once, any fan-out)
    tokenrelay_streams_total{state,error_type} counter   streams by terminal event
    tokenrelay_cancellations_total{phase,reason}          counter
    tokenrelay_cancel_upstream_close_seconds{phase}       histogram cancel asked -> upstream closed
    tokenrelay_resumes_total                   counter   Last-Event-ID resumes accepted
    tokenrelay_ended_stream_bytes              gauge     payload bytes kept for ended streams
    tokenrelay_ended_streams_evicted_total     counter   ended streams dropped before their TTL
    tokenrelay_key_requests_total{key}         counter   requests by API key name
    tokenrelay_key_streams_total{key,state,error_type}    counter   by API key name
    tokenrelay_key_tokens_total{key,kind}      counter   input, output, cached, reasoning
    tokenrelay_retries_total{error_type}       counter   upstream attempts retried
    tokenrelay_upstream_requests_total{provider,status}   counter   HTTP status or failure kind
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TOKEN_GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CLOSE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Histogram:
    """Counts per bucket (`le` semantics) and a sum; cumulated only when rendered."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        running = 0
        buckets = []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            buckets.append((bound, float(running)))
        return buckets


class Metrics:
    def __init__(self) -> None:
        self.active_streams = 0
        self.active_subscribers = 0
        self.tokens = 0
        self.resumes = 0
        self.ended_bytes = 0  # the memory log's, for resumes of ended streams
        self.ended_evicted = 0
        self.key_requests: dict[str, int] = {}  # by key *name*, never the key
        self.key_streams: dict[tuple[str, str, str], int] = {}
        self.key_tokens: dict[tuple[str, str], int] = {}
        self.ttft = Histogram(LATENCY_BUCKETS)
        self.token_gap = Histogram(TOKEN_GAP_BUCKETS)
        self.streams: dict[tuple[str, str], int] = {}
        self.cancellations: dict[tuple[str, str], int] = {}
        self.cancel_close: dict[str, Histogram] = {}
        self.retries: dict[str, int] = {}
        self.upstream_requests: dict[tuple[str, str], int] = {}

    def key_stream_ended(
        self, key_name: str, ending: tuple[str, str], counts: dict[str, int]
    ) -> None:
        at = (key_name, *ending)
        self.key_streams[at] = self.key_streams.get(at, 0) + 1
        for kind, n in counts.items():
            if kind != "requests" and n:
                row = (key_name, kind.removesuffix("_tokens"))
                self.key_tokens[row] = self.key_tokens.get(row, 0) + n

    def stream_ended(self, state: str, error_type: str = "") -> None:
        key = (state, error_type)
        self.streams[key] = self.streams.get(key, 0) + 1

    def cancelled(self, phase: str, reason: str, close_seconds: float | None) -> None:
        key = (phase, reason)
        self.cancellations[key] = self.cancellations.get(key, 0) + 1
        if close_seconds is not None:
            histogram = self.cancel_close.setdefault(phase, Histogram(CLOSE_BUCKETS))
            histogram.observe(close_seconds)

    def retried(self, error_type: str) -> None:
        self.retries[error_type] = self.retries.get(error_type, 0) + 1

    def upstream_request(self, provider: str, status: int | str) -> None:
        key = (provider, str(status))
        self.upstream_requests[key] = self.upstream_requests.get(key, 0) + 1


METRICS = Metrics()


class MetricsCollector(Collector):
    """Hands `Metrics` to prometheus_client at scrape time."""

    def __init__(self, metrics: Metrics = METRICS) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m
        yield _gauge("active_streams", "Generations running in this process.", m.active_streams)
        yield _gauge("active_subscribers", "Connections reading a stream.", m.active_subscribers)
        yield _histogram("ttft_seconds", "Stream start to first token.", m.ttft)
        yield _histogram("inter_token_seconds", "Gap between consecutive tokens.", m.token_gap)
        yield _counter("tokens", "Tokens relayed (counted once, whatever the fan-out).", m.tokens)
        yield _labelled("streams", "Streams by terminal event.", ("state", "error_type"), m.streams)
        yield _labelled(
            "cancellations",
            "Cancelled streams by phase and reason.",
            ("phase", "reason"),
            m.cancellations,
        )
        close = HistogramMetricFamily(
            "tokenrelay_cancel_upstream_close_seconds",
            "From the cancel to the upstream response closed.",
            labels=["phase"],
        )
        for phase, histogram in sorted(m.cancel_close.items()):
            close.add_metric([phase], histogram.cumulative(), histogram.total)
        yield close
        yield _counter("resumes", "Resumes from a Last-Event-ID.", m.resumes)
        requests = {(name,): n for name, n in m.key_requests.items()}
        yield _labelled("key_requests", "Requests by API key name.", ("key",), requests)
        yield _labelled(
            "key_streams",
            "Streams by API key name and terminal event.",
            ("key", "state", "error_type"),
            m.key_streams,
        )
        yield _labelled(
            "key_tokens", "Tokens by API key name and kind.", ("key", "kind"), m.key_tokens
        )
        kept = "Payload bytes kept for ended streams (memory log)."
        yield _gauge("ended_stream_bytes", kept, m.ended_bytes)
        yield _counter(
            "ended_streams_evicted",
            "Ended streams dropped before their TTL to stay under max_ended_bytes.",
            m.ended_evicted,
        )
        retries = {(kind,): n for kind, n in m.retries.items()}
        yield _labelled("retries", "Upstream attempts retried.", ("error_type",), retries)
        yield _labelled(
            "upstream_requests",
            "Upstream HTTP requests by provider and status (or failure kind).",
            ("provider", "status"),
            m.upstream_requests,
        )


def _gauge(name: str, documentation: str, value: float) -> Metric:
    return GaugeMetricFamily(f"tokenrelay_{name}", documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> Metric:
    return CounterMetricFamily(f"tokenrelay_{name}", documentation, value=value)


def _histogram(name: str, documentation: str, histogram: Histogram) -> Metric:
    return HistogramMetricFamily(
        f"tokenrelay_{name}",
        documentation,
        buckets=histogram.cumulative(),
        sum_value=histogram.total,
    )


def _labelled(
    name: str, documentation: str, labels: tuple[str, ...], values: dict[Any, int]
) -> Metric:
    family = CounterMetricFamily(f"tokenrelay_{name}", documentation, labels=list(labels))
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family
