"""The end-of-run table and warnings, for a terminal (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

LATENCIES = (("TTFT", "ttft_ms"), ("ITL", "itl_ms"), ("TPOT", "tpot_ms"), ("E2E", "e2e_ms"))


def _ms(figures: dict[str, float] | None, key: str) -> str:
    if not figures:
        return "-"
    value = figures[key]
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def latency_table(phases: list[dict[str, Any]]) -> Table:
    table = Table(title="latency (ms)", title_justify="left")
    for column in ("phase", "", "p50", "p90", "p95", "p99", "max"):
        table.add_column(column, justify="left" if column in ("phase", "") else "right")
    for phase in phases:
        for row, (name, key) in enumerate(LATENCIES):
            figures = phase[key]
            cells = [_ms(figures, q) for q in ("p50", "p90", "p95", "p99", "max")]
            label = phase["phase"] if row == 0 else ""
            table.add_row(label, name, *cells, end_section=row == len(LATENCIES) - 1)
    return table


def throughput_table(phases: list[dict[str, Any]]) -> Table:
    table = Table(title="throughput and cost", title_justify="left")
    columns = ("phase", "req", "ok", "tok/s", "req/s", "srv µs/tok", "srv MiB", "conns", "gen CPU")
    for column in columns:
        table.add_column(column, justify="left" if column == "phase" else "right")
    for phase in phases:
        server, generator = phase["server"], phase["generator"]
        table.add_row(
            phase["phase"],
            str(phase["requests"]),
            str(phase["completed"]),
            f"{phase['output_tokens_per_second']:.0f}",
            f"{phase['requests_per_second']:.1f}",
            _or_dash(server.get("cpu_us_per_token"), "{:.1f}"),
            _or_dash(server.get("rss_mib_max")),
            str(server["max_connections"]),
            f"{generator['cpu_share_of_one_core']:.0%}",
        )
    return table


def _or_dash(value: object, form: str = "{}") -> str:
    return "-" if value is None else form.format(value)


def findings(phases: list[dict[str, Any]]) -> list[str]:
    """What a reader must not miss: saturation, buffering, cancels and resumes that failed."""
    lines = []
    for phase in phases:
        name = phase["phase"]
        if phase["errors"]:
            errors = ", ".join(f"{kind} ×{n}" for kind, n in sorted(phase["errors"].items()))
            lines.append(f"[red]{name}: errors: {errors}[/]")
        if phase["generator"]["saturated"]:
            lines.append(
                f"[yellow]{name}: the load generator used "
                f"{phase['generator']['cpu_share_of_one_core']:.0%} of a core; its figures "
                "measure it, not the server (fewer users, or run it on another machine)[/]"
            )
        burst = phase["bursts"]
        if burst["buffering_detected"]:
            lines.append(
                f"[red]{name}: tokens arrived in bursts ({burst['tokens_per_read']} per read "
                "on paced streams): something between here and the model buffers the stream "
                "(nginx: proxy_buffering off, or the X-Accel-Buffering: no header)[/]"
            )
        if "cancel" in phase:
            lines.append(_cancel_line(name, phase["cancel"]))
        if "drop" in phase:
            drop = phase["drop"]
            resume = drop["resume_ms"]
            lines.append(
                f"{name}: {drop['dropped']} dropped and resumed, {drop['exact']} byte-exact, "
                f"{drop['not_exact']} not; resume p50 {_ms(resume, 'p50')} ms, "
                f"p99 {_ms(resume, 'p99')} ms"
            )
    return lines


def _cancel_line(name: str, cancel: dict[str, Any]) -> str:
    line = f"{name}: {cancel['cancelled']} cancelled"
    if "reached_upstream" not in cancel:
        return line + " (pass --upstream URL of a tokenrelay mock-upstream to verify them)"
    lag = cancel["upstream_close_lag_ms"]
    line += (
        f"; the upstream saw {cancel['reached_upstream']} closed "
        f"(lag p50 {_ms(lag, 'p50')} ms, p99 {_ms(lag, 'p99')} ms, max {_ms(lag, 'max')} ms)"
    )
    if cancel["not_seen"]:
        line = f"[red]{line}; {cancel['not_seen']} never reached it[/]"
    if cancel["upstream_finished_first"]:
        line += f"; {cancel['upstream_finished_first']} had finished upstream before the cancel"
    return line


def print_report(console: Console, report: dict[str, Any]) -> None:
    phases = report["phases"]
    console.print(latency_table(phases))
    console.print(throughput_table(phases))
    for line in findings(phases):
        console.print(line)
