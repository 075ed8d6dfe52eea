"""The command line: a thin layer over the library (the library never imports typer or rich)."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape

from tokenrelay import __version__
from tokenrelay.auth.cli import keys as keys_commands
from tokenrelay.bench.cli import bench as bench_command
from tokenrelay.cli_chat import ChatOutput, StreamEnded
from tokenrelay.cli_help import default, drop_type_labels
from tokenrelay.client import Client, ConnectionLost, StreamFailed
from tokenrelay.logs import log_config
from tokenrelay.metrics_workers import DIRECTORY_ENV as METRICS_DIR_ENV
from tokenrelay.providers.configured import upstream_sections
from tokenrelay.settings import (
    CONFIG_ENV,
    ServerSection,
    Settings,
    SettingsError,
    load_settings,
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",  # help texts may use rich markup (cli_help.default)
    help="tokenrelay: stream LLM answers.",
)
_SERVER = ServerSection()  # the defaults `serve --help` names


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"tokenrelay {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    pass


@app.command()
def serve(
    host: Annotated[
        str | None,
        typer.Option(
            help="Address to bind." + default(f"the config's server.host, else {_SERVER.host}")
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            help="Port to bind." + default(f"the config's server.port, else {_SERVER.port}")
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes; more than one needs Redis.")
    ] = 1,
    log_format: Annotated[
        str | None,
        typer.Option(
            help="text or json."
            + default(f"$TOKENRELAY_LOG_FORMAT, else server.log_format, else {_SERVER.log_format}")
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="The settings file, tokenrelay.toml." + default(f"${CONFIG_ENV}, else none"),
            exists=True,
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Serve the API (uvicorn with uvloop and httptools)."""
    import uvicorn

    if config is not None:
        os.environ[CONFIG_ENV] = str(config.resolve())  # workers read it too
    from tokenrelay.server.connection import ConnectionGuard, raise_descriptor_limit
    from tokenrelay.server.lifecycle import SERVER_PID_ENV

    settings = _settings_or_exit({"host": host, "port": port, "log_format": log_format})
    if workers > 1 and not settings.redis.url:
        typer.echo(
            "tokenrelay: --workers needs Redis: without it each worker keeps its own streams,"
            " and a resume or cancel by id would reach the wrong worker. Set [redis] url (or"
            " TOKENRELAY_REDIS_URL), or run one worker per port behind a load balancer.",
            err=True,
        )
        raise typer.Exit(2)
    raise_descriptor_limit()
    if workers > 1:  # each worker writes its metrics here; a scrape sums them
        os.environ[METRICS_DIR_ENV] = tempfile.mkdtemp(prefix="tokenrelay-metrics-")
    os.environ[SERVER_PID_ENV] = str(os.getpid())  # what /healthz names as the server
    typer.echo(_startup_line(settings))
    if _open_to_the_network(settings):
        typer.echo(
            f"tokenrelay: WARNING: serving {settings.server.host} with no API keys: anyone who"
            " can reach it can spend your upstream keys. Create one: tokenrelay keys create NAME",
            err=True,
        )
    uvicorn.run(
        "tokenrelay.server.app:serve_app",
        factory=True,
        host=settings.server.host,
        port=settings.server.port,
        workers=workers,
        loop="uvloop",
        http=ConnectionGuard,
        ws="none",
        access_log=False,
        log_config=log_config(settings.server.log_format),
        timeout_keep_alive=settings.server.keep_alive_timeout,
        timeout_graceful_shutdown=int(settings.streams.drain_timeout) + 5,
    )


def _settings_or_exit(server: dict[str, Any]) -> Settings:
    """The settings, with the command line's `server` options over the file's and the
    environment's; a clear message and exit status 2 if they are wrong."""
    try:
        return load_settings(overrides={"server": {k: v for k, v in server.items() if v}})
    except SettingsError as exc:
        typer.echo(f"tokenrelay: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


def _open_to_the_network(settings: Settings) -> bool:
    """Bound beyond loopback, and nothing asks for a key."""
    import asyncio
    import ipaddress

    from tokenrelay.auth.keys import key_store_at

    host = settings.server.host
    try:
        if ipaddress.ip_address(host).is_loopback:
            return False
    except ValueError:
        if host == "localhost":
            return False
    if settings.auth.required:
        return False
    store = key_store_at(
        settings.redis.url, settings.auth.keys_file, cluster=settings.redis.cluster
    )

    async def any_key() -> bool:
        try:
            return await store.any()
        except Exception:  # Redis not up yet: say nothing rather than something wrong
            return True
        finally:
            await store.aclose()

    return not asyncio.run(any_key())


def _startup_line(settings: Settings) -> str:
    host, port = settings.server.host, settings.server.port
    shown = f"[{host}]" if ":" in host else host
    upstreams = sorted(upstream_sections(settings))
    offer = (
        f"serving providers {', '.join(upstreams)} and sim"
        if upstreams
        else "no provider keys found; serving the built-in simulator"
    )
    model = settings.server.default_model
    return f"tokenrelay {__version__}: {offer} (default model {model}) at http://{shown}:{port}"


class _HideSimulatedResets(logging.Filter):
    """The mock resets connections on purpose; uvicorn would log each as a crash."""

    def filter(self, record: logging.LogRecord) -> bool:
        from tokenrelay.mock.app import SimulatedReset

        return not (record.exc_info and isinstance(record.exc_info[1], SimulatedReset))


@app.command("mock-upstream")
def mock_upstream(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 9000,
    ttft: Annotated[float, typer.Option(help="Seconds to the first token.")] = 0.3,
    tps: Annotated[float, typer.Option(help="Tokens per second (0: no delay).")] = 40.0,
) -> None:
    """Serve the sim over the OpenAI and Anthropic wire formats, with faults per request."""
    import uvicorn

    from tokenrelay.mock.app import create_mock_app
    from tokenrelay.providers.sim import SimTiming

    logging.getLogger("uvicorn.error").addFilter(_HideSimulatedResets())
    typer.echo(
        f"tokenrelay mock upstream at http://{host}:{port} "
        f"(OPENAI_BASE_URL=http://{host}:{port}/v1, ANTHROPIC_BASE_URL=http://{host}:{port})"
    )
    uvicorn.run(
        create_mock_app(SimTiming(ttft=ttft, tokens_per_second=tps)),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        ws="none",
        access_log=False,
        log_config=None,
    )


@app.command()
def chat(
    question: Annotated[str, typer.Argument(help="What to ask.")],
    model: Annotated[
        str | None,
        typer.Option(help="provider/model, e.g. sim/fast." + default("the server's default model")),
    ] = None,
    url: Annotated[str, typer.Option(help="tokenrelay server.")] = "http://127.0.0.1:8000",
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    max_tokens: Annotated[
        int | None, typer.Option(min=1, help="Longest answer, in tokens." + default("the model's"))
    ] = None,
    raw: Annotated[
        bool,
        typer.Option(
            "--raw",
            help="Print the text exactly as it arrives, markdown unrendered"
            " (always so when stdout is not a terminal).",
        ),
    ] = False,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="TOKENRELAY_API_KEY", help="A key, if the server needs one."),
    ] = None,
) -> None:
    """Stream an answer into the terminal, markdown rendered. Ctrl-C cancels it on the server."""
    fields: dict[str, Any] = {"model": model, "system_prompt": system, "max_tokens": max_tokens}
    # Ctrl-C must stop the bill even before the first event names the stream (and DELETE can
    # reach it), so the connection's end cancels: this command does not resume after a drop.
    fields["on_disconnect"] = "cancel"
    with (
        Client(url, api_key=api_key or "") as client,
        ChatOutput(Console(highlight=False), raw) as output,
    ):
        stream = client.stream(question, **fields)
        try:
            output.show(stream)
        except KeyboardInterrupt:
            # Leaving the stream closes its connection, which cancels it on the server
            # (on_disconnect "cancel"); the DELETE is belt and braces, and usually finds it
            # cancelled already: its answer says nothing about whether the stream was live.
            stream.cancel()
            output.interrupted()
            raise typer.Exit(130) from None
        except StreamEnded:
            raise typer.Exit(1) from None
        except StreamFailed as exc:
            output.note(f"[red]error {exc.status}[/] {escape(exc.error.get('message', ''))}")
            raise typer.Exit(1) from None
        except (httpx.TransportError, ConnectionLost):
            output.note(f"[red]cannot reach tokenrelay at {url}[/] (is `tokenrelay serve` up?)")
            raise typer.Exit(1) from None


app.command("bench")(bench_command)
app.add_typer(keys_commands, name="keys")


def main() -> None:
    command = typer.main.get_command(app)
    drop_type_labels(command)
    command()
