"""`tokenrelay bench URL ...`: the command, its progress bar, and where its figures go."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import orjson
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from tokenrelay.bench.load import Options, Phase
from tokenrelay.bench.report import print_report
from tokenrelay.bench.request import Result
from tokenrelay.bench.runner import OptionsError, PhaseStarted, RequestDone, check, run_sync


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise typer.BadParameter("a comma-separated list of integers, e.g. 1,10,100") from None
    if not levels or min(levels) < 1:
        raise typer.BadParameter("each level must be at least 1")
    return levels


def bench(
    url: Annotated[str, typer.Argument(help="Server to load, e.g. http://127.0.0.1:8000")],
    api: Annotated[str, typer.Option(help="native (tokenrelay) or openai.")] = "native",
    model: Annotated[str, typer.Option(help="Model to ask for.")] = "sim/default",
    prompt: Annotated[
        str | None, typer.Option(help="Ask this in every request (default: varied questions).")
    ] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="Longest answer, in tokens.")] = 200,
    concurrency: Annotated[str, typer.Option(help="Closed loop levels, e.g. 1,10,100.")] = "10",
    rate: Annotated[float | None, typer.Option(help="Open loop: requests/s (Poisson).")] = None,
    duration: Annotated[float | None, typer.Option(help="Seconds per phase.")] = None,
    requests: Annotated[int | None, typer.Option(min=1, help="Requests per phase.")] = None,
    ramp_up: Annotated[float, typer.Option(min=0, help="Seconds to reach full load.")] = 0.0,
    cancel_after_tokens: Annotated[
        int | None, typer.Option(min=1, help="Cancel streams after this many tokens.")
    ] = None,
    cancel_rate: Annotated[
        float | None,
        typer.Option(help="Share of streams to cancel (default 1 with --cancel-after-tokens)."),
    ] = None,
    drop_rate: Annotated[float, typer.Option(help="Share of streams to drop and resume.")] = 0.0,
    upstream: Annotated[
        str | None, typer.Option(help="tokenrelay mock-upstream URL: verify cancels reached it.")
    ] = None,
    server_pid: Annotated[
        str | None,
        typer.Option(help="Watch this process's CPU and RSS; auto: the pid /healthz names."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds per request.")] = 120.0,
    seed: Annotated[
        int, typer.Option(help="Seeds questions, arrivals, cancels: same seed, same questions.")
    ] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    html_out: Annotated[Path | None, typer.Option("--html", help="Write an HTML report.")] = None,
) -> None:
    """Load a streaming endpoint: TTFT, token gaps, cancels and resumes verified."""
    if api not in ("native", "openai"):
        raise typer.BadParameter("native or openai", param_hint="--api")
    if cancel_rate is None:
        cancel_rate = 1.0 if cancel_after_tokens else 0.0
    options = Options(
        url=url.rstrip("/"),
        api="native" if api == "native" else "openai",
        model=model,
        prompt=prompt,
        max_tokens=max_tokens,
        concurrency=_levels(concurrency),
        rate=rate,
        duration=duration,
        requests=requests,
        ramp_up=ramp_up,
        cancel_after=cancel_after_tokens,
        cancel_rate=cancel_rate,
        drop_rate=drop_rate,
        upstream=upstream.rstrip("/") if upstream else None,
        server_pid=_server_pid(server_pid),
        timeout=timeout,
        seed=seed,
    )
    console = Console(stderr=json_out)
    try:
        check(options)
        with _progress(console, options) as (on_phase, on_result):
            report = run_sync(options, on_phase=on_phase, on_result=on_result)
    except OptionsError as exc:  # --server-pid auto is resolved when the run begins
        console.print(f"[red]tokenrelay bench:[/] {exc}")
        raise typer.Exit(2) from None
    if json_out:
        typer.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        print_report(console, report)
    if html_out is not None:
        from tokenrelay.bench.html import render

        html_out.write_text(render(report), encoding="utf-8")
        console.print(f"report written to {html_out}")


def _server_pid(text: str | None) -> int | Literal["auto"] | None:
    if text is None:
        return None
    if text == "auto":
        return "auto"
    if not text.isdigit() or int(text) < 1:
        raise typer.BadParameter("a process id, or auto", param_hint="--server-pid")
    return int(text)


class _progress:
    """A rich progress bar per phase (total known with --requests, else a running count)."""

    def __init__(self, console: Console, options: Options) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.options = options
        self.task: TaskID | None = None
        self.errors = 0

    def __enter__(self) -> tuple[PhaseStarted, RequestDone]:
        self.progress.start()
        return self.on_phase, self.on_result

    def __exit__(self, *exc: object) -> None:
        self._finish_task()
        self.progress.stop()

    def _finish_task(self) -> None:
        """Freeze the bar (and its clock) of the phase that just ended."""
        if self.task is not None:
            done = self.progress.tasks[self.task].completed
            self.progress.update(self.task, total=done, completed=done)
            self.progress.stop_task(self.task)

    def on_phase(self, phase: Phase) -> None:
        self._finish_task()
        self.errors = 0
        self.task = self.progress.add_task(phase.label, total=self.options.requests, status="")

    def on_result(self, phase: Phase, result: Result) -> None:
        self.errors += result.error is not None
        if self.task is not None:
            self.progress.update(
                self.task, advance=1, status=f"errors {self.errors}" if self.errors else ""
            )
