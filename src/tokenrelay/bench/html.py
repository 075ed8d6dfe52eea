"""`--html report.html`: one self-contained page (inline SVG plots, no scripts, no CDN).

Plots: the TTFT and end-to-end latency distributions per phase (as CDFs, which stay readable
when phases overlap), TTFT and token throughput against concurrency for sweeps, and the
server's CPU, memory and open connections over time. Needs matplotlib (`pip install
'tokenrelay[bench]'`).
"""

from __future__ import annotations

import html
import io
import itertools
from typing import Any

from rich.text import Text

from tokenrelay.bench.report import findings


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot.subplots(figsize=(7.5, 3.6), layout="constrained")


def _svg(figure: Any) -> str:
    from matplotlib import pyplot

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    pyplot.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _cdf(report: dict[str, Any], key: str, title: str) -> str:
    figure, axes = _figure()
    for label, raw in report["raw"].items():
        values = sorted(raw[key])
        if values:
            shares = [(i + 1) / len(values) for i in range(len(values))]
            axes.step(values, shares, where="post", label=label)
    axes.set(title=title, xlabel="ms", ylabel="share of requests ≤ x")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return _svg(figure)


def _sweep(phases: list[dict[str, Any]]) -> str:
    figure, axes = _figure()
    levels = [p["concurrency"] for p in phases]
    for quantile in ("p50", "p99"):
        axes.plot(
            levels,
            [(p["ttft_ms"] or {}).get(quantile) for p in phases],
            "o-",
            label=f"TTFT {quantile} (ms)",
        )
    axes.set(xscale="log", xlabel="concurrent streams", ylabel="ms", title="TTFT and throughput")
    axes.grid(alpha=0.3)
    rates = axes.twinx()
    rates.plot(
        levels,
        [p["output_tokens_per_second"] for p in phases],
        "s--",
        color="tab:green",
        label="output tokens/s",
    )
    rates.set_ylabel("tokens/s")
    lines = axes.get_legend_handles_labels()
    more = rates.get_legend_handles_labels()
    axes.legend(lines[0] + more[0], lines[1] + more[1], fontsize="small", loc="upper left")
    return _svg(figure)


def _timeline(samples: list[dict[str, float]]) -> str:
    figure, axes = _figure()
    times = [s["t"] for s in samples]
    cpu = [0.0] + [
        100 * (b["cpu_seconds"] - a["cpu_seconds"]) / max(b["t"] - a["t"], 1e-9)
        for a, b in itertools.pairwise(samples)
    ]
    axes.plot(times, cpu, label="server CPU %")
    axes.plot(times, [s["connections"] for s in samples], label="open connections")
    axes.set(xlabel="seconds", title="server over time")
    axes.grid(alpha=0.3)
    memory = axes.twinx()
    memory.plot(times, [s["rss_mib"] for s in samples], color="tab:red", label="RSS MiB")
    memory.set_ylabel("RSS MiB")
    lines = axes.get_legend_handles_labels()
    more = memory.get_legend_handles_labels()
    axes.legend(lines[0] + more[0], lines[1] + more[1], fontsize="small", loc="upper left")
    return _svg(figure)


def render(report: dict[str, Any]) -> str:
    phases = report["phases"]
    plots = [_cdf(report, "ttft_ms", "time to first token"), _cdf(report, "e2e_ms", "end to end")]
    if len(phases) > 1 and all(p["concurrency"] for p in phases):
        plots.append(_sweep(phases))
    if any(s["cpu_seconds"] or s["rss_mib"] for s in report["timeline"]):
        plots.append(_timeline(report["timeline"]))
    target = report["target"]
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
model {html.escape(target["model"])} · max tokens {report["load"]["max_tokens"]}</p>
<table><tr><th>phase</th><th>requests</th><th>ok</th><th>TTFT ms p50/p99</th>
<th>ITL ms p50/p99</th><th>E2E ms p50/p99</th><th>tokens/s</th><th>server µs/token</th>
<th>errors</th></tr>{rows}</table>
<ul>{notes}</ul>
{"".join(f"<figure>{plot}</figure>" for plot in plots)}
</html>
"""


def _q(figures: dict[str, float] | None) -> str:
    return "-" if not figures else f"{figures['p50']:.1f} / {figures['p99']:.1f}"


def _plain(line: str) -> str:
    """The finding without rich's [colour] markup."""
    return Text.from_markup(line).plain
