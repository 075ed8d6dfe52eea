"""`--html report.html`: one self-contained page (inline SVG plots, no scripts, no CDN).

Plots: the TTFT and end-to-end latency distributions per phase (as CDFs, which stay readable
when phases overlap); for sweeps, TTFT and token throughput against concurrency, in two panels;
and the server over time, one panel per quantity (CPU, memory, open connections), each axis
from zero with its unit, phases marked. The SVG is written by svg.py: no plotting library.
"""

from __future__ import annotations

import html
from typing import Any

from rich.text import Text

from tokenrelay.bench import svg
from tokenrelay.bench.report import findings

CDF_POINTS = 400  # a CDF of more requests is drawn through this many of them, evenly by rank
CPU_WINDOW = 0.25  # seconds: CPU % over shorter spans is mostly the clock tick's rounding


def _cdf_points(values: list[float]) -> list[tuple[float, float]]:
    """A step line: at each value the share of requests at or below it rises (in %)."""
    ordered = sorted(values)
    count = len(ordered)
    ranks = range(count) if count <= CDF_POINTS else _spread(count, CDF_POINTS)
    points: list[tuple[float, float]] = []
    before = 0.0
    for rank in ranks:
        share = 100 * (rank + 1) / count
        points += [(ordered[rank], before), (ordered[rank], share)]
        before = share
    return points


def _spread(count: int, most: int) -> list[int]:
    """`most` ranks out of `count`, evenly, the first and the last included."""
    return sorted({round(i * (count - 1) / (most - 1)) for i in range(most)})


def _cdf(report: dict[str, Any], key: str, title: str, quantity: str) -> str:
    series = [
        svg.Series(label, _cdf_points(raw[key])) for label, raw in report["raw"].items() if raw[key]
    ]
    panel = svg.Panel(svg.Axis("share of requests at or below x (%)", limits=(0, 100)), series)
    return svg.chart(title, svg.Axis(f"{quantity} (ms)", from_zero=False), [panel])


def _sweep(phases: list[dict[str, Any]]) -> str:
    levels = [p["concurrency"] for p in phases]

    def line(label: str, values: list[float | None], dashed: bool = False) -> svg.Series:
        points = [(c, v) for c, v in zip(levels, values, strict=True) if v is not None]
        return svg.Series(label, points, dots=True, dashed=dashed)

    ttft = svg.Panel(
        svg.Axis("time to first token (ms)"),
        [
            line("p50", [(p["ttft_ms"] or {}).get("p50") for p in phases]),
            line("p99", [(p["ttft_ms"] or {}).get("p99") for p in phases], dashed=True),
        ],
    )
    rate = svg.Panel(
        svg.Axis("output tokens per second (all streams)"),
        [line("", [p["output_tokens_per_second"] for p in phases])],
        height=140,
    )
    x = svg.Axis("concurrent streams", log=True, ticks=levels)
    return svg.chart("latency and throughput against concurrency", x, [ttft, rate])


def _cpu_percent(samples: list[dict[str, float]]) -> list[tuple[float, float]]:
    """CPU % of one core between samples at least `CPU_WINDOW` apart, at the later one."""
    points: list[tuple[float, float]] = []
    if not samples:
        return points
    anchor = samples[0]
    for sample in samples[1:]:
        span = sample["t"] - anchor["t"]
        if span >= CPU_WINDOW:
            used = sample["cpu_seconds"] - anchor["cpu_seconds"]
            points.append((sample["t"], 100 * used / span))
            anchor = sample
    return points


def _timeline(report: dict[str, Any]) -> str:
    samples = report["timeline"]
    panels = []
    if report["target"].get("server_pid"):
        panels += [
            svg.Panel(
                svg.Axis("server CPU (% of one core)"), [svg.Series("", _cpu_percent(samples))]
            ),
            svg.Panel(
                svg.Axis("server memory, RSS (MiB)"),
                [svg.Series("", [(s["t"], s["rss_mib"]) for s in samples], colour=svg.PALETTE[1])],
            ),
        ]
    panels.append(
        svg.Panel(
            svg.Axis("open connections to the server's port"),
            [svg.Series("", [(s["t"], s["connections"]) for s in samples], colour=svg.PALETTE[2])],
            height=120,
        )
    )
    marks = [(p["began_at_seconds"], p["phase"]) for p in report["phases"]]
    x = svg.Axis("seconds since the run began")
    return svg.chart("the server over time", x, panels, marks=marks)


def render(report: dict[str, Any]) -> str:
    phases = report["phases"]
    plots = [
        _cdf(report, "ttft_ms", "time to first token, by request", "time to first token"),
        _cdf(report, "e2e_ms", "end-to-end latency, by request", "end-to-end latency"),
    ]
    if len(phases) > 1 and all(p["concurrency"] for p in phases):
        plots.append(_sweep(phases))
    if report["timeline"]:
        plots.append(_timeline(report))
    target, load = report["target"], report["load"]
    rows = "".join(
        f"<tr><td>{html.escape(p['phase'])}</td><td>{p['requests']}</td><td>{p['completed']}</td>"
        f"<td>{_q(p['ttft_ms'])}</td><td>{_q(p['itl_ms'])}</td><td>{_q(p['e2e_ms'])}</td>"
        f"<td>{p['output_tokens_per_second']:.0f}</td>"
        f"<td>{p['server'].get('cpu_us_per_token', '-')}</td>"
        f"<td>{html.escape(str(p['errors'] or '-'))}</td></tr>"
        for p in phases
    )
    notes = "".join(f"<li>{html.escape(_plain(line))}</li>" for line in findings(phases))
    return f"""<!doctype html>
<html lang="en"><meta charset="utf-8"><title>tokenrelay bench</title>
<style>body{{font:14px system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}}
td:first-child{{text-align:left}}svg{{max-width:100%;height:auto}}</style>
<h1>tokenrelay bench</h1>
<p>{html.escape(target["url"])} · API {html.escape(target["api"])} ·
model {html.escape(target["model"])} · max tokens {load["max_tokens"]} ·
{load["prompts"]} prompts, seed {load["seed"]}{_watched(target)}</p>
<table><tr><th>phase</th><th>requests</th><th>ok</th><th>TTFT ms p50/p99</th>
<th>ITL ms p50/p99</th><th>E2E ms p50/p99</th><th>tokens/s</th><th>server µs/token</th>
<th>errors</th></tr>{rows}</table>
<ul>{notes}</ul>
{"".join(f"<figure>{plot}</figure>" for plot in plots)}
</html>
"""


def _watched(target: dict[str, Any]) -> str:
    pid = target.get("server_pid")
    return f" · server pid {pid}" if pid else ""


def _q(figures: dict[str, float] | None) -> str:
    return "-" if not figures else f"{figures['p50']:.1f} / {figures['p99']:.1f}"


def _plain(line: str) -> str:
    """The finding without rich's [colour] markup."""
    return Text.from_markup(line).plain
