"""`tokenrelay keys create | list | revoke`: the keys of a deployment, from its own settings
(Redis if `[redis] url` is set, else the keys file)."""

from __future__ import annotations

import asyncio
import datetime
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from tokenrelay.auth.keys import NAME, KeyExists, KeyLimits, KeyStore, key_store_at, new_key, where
from tokenrelay.cli_help import default
from tokenrelay.settings import CONFIG_ENV, Settings, SettingsError, load_settings

T = TypeVar("T")
keys = typer.Typer(no_args_is_help=True, help="Create, list and revoke API keys.")

Config = Annotated[
    Path | None,
    typer.Option(
        help="The settings file, tokenrelay.toml." + default(f"${CONFIG_ENV}, else none"),
        exists=True,
        dir_okay=False,
    ),
]


def _settings(config: Path | None) -> Settings:
    if config is not None:
        os.environ[CONFIG_ENV] = str(config.resolve())
    try:
        return load_settings()
    except SettingsError as exc:
        typer.echo(f"tokenrelay: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


def _store(config: Path | None) -> KeyStore:
    settings = _settings(config)
    return key_store_at(settings.redis.url, settings.auth.keys_file, cluster=settings.redis.cluster)


def _with_store(config: Path | None, work: Callable[[KeyStore], Awaitable[T]]) -> T:
    """`work` on the deployment's store, in one event loop (a Redis client is bound to it)."""
    store = _store(config)

    async def run() -> T:
        try:
            return await work(store)
        finally:
            await store.aclose()

    return asyncio.run(run())


def _expiry(date: str | None) -> float | None:
    if date is None:
        return None
    try:
        when = datetime.datetime.fromisoformat(date)
    except ValueError:
        typer.echo("tokenrelay: --expires takes a date, 2027-01-31 or 2027-01-31T12:00", err=True)
        raise typer.Exit(2) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    if when.timestamp() <= time.time():
        typer.echo("tokenrelay: --expires is in the past", err=True)
        raise typer.Exit(2)
    return when.timestamp()


@keys.command()
def create(
    name: Annotated[str, typer.Argument(help="A name for the key: who or what uses it.")],
    max_concurrent: Annotated[int | None, typer.Option(min=1, help="Streams at once.")] = None,
    requests_per_minute: Annotated[
        int | None, typer.Option(min=1, help="Requests a minute.")
    ] = None,
    tokens_per_minute: Annotated[
        int | None, typer.Option(min=1, help="Output tokens, counted as they stream.")
    ] = None,
    models: Annotated[
        list[str] | None, typer.Option("--models", help="A model glob it may use; repeatable.")
    ] = None,
    expires: Annotated[str | None, typer.Option(help="A date (UTC unless given).")] = None,
    config: Config = None,
) -> None:
    """Create a key. It is printed once, alone on the last line: keep it."""
    if not NAME.fullmatch(name):
        typer.echo(
            "tokenrelay: a key's name is 1 to 64 letters, digits and . _ @ -, starting with a"
            " letter or digit",
            err=True,
        )
        raise typer.Exit(2)
    limits = KeyLimits(max_concurrent, requests_per_minute, tokens_per_minute)
    secret, key = new_key(name, limits, tuple(models or ()), _expiry(expires))
    try:
        _with_store(config, lambda store: store.add(key))
    except KeyExists:
        typer.echo(f"tokenrelay: a key named {name!r} exists; revoke it first", err=True)
        raise typer.Exit(1) from None
    settings = _settings(config)
    place = where(settings.redis.url, settings.auth.keys_file)
    typer.echo(f"created key {name!r} in {place}; it is shown once, on the next line", err=True)
    typer.echo(secret)


@keys.command("list")
def list_keys(config: Config = None) -> None:
    """Names, limits, creation and last use; never a key."""
    found = _with_store(config, lambda store: store.all())
    settings = _settings(config)
    place = where(settings.redis.url, settings.auth.keys_file)
    if not found:
        required = settings.auth.required
        typer.echo(
            f"no keys in {place}: "
            + (
                "the server refuses every request ([auth] required)"
                if required
                else "the server takes requests without one"
            )
        )
        return
    typer.echo(f"keys in {place}:", err=True)
    for key in found:
        limits = key.limits
        parts = [
            key.name,
            f"created {_day(key.created_at)}",
            f"last used {_day(key.last_used) if key.last_used else 'never'}",
            f"concurrent {limits.max_concurrent or '-'}",
            f"rpm {limits.requests_per_minute or '-'}",
            f"tpm {limits.tokens_per_minute or '-'}",
            f"models {','.join(key.models) or '*'}",
        ]
        if key.expires_at is not None:
            parts.append(f"expires {_day(key.expires_at)}")
        typer.echo("  ".join(parts))


@keys.command()
def revoke(
    name: Annotated[str, typer.Argument(help="The key's name.")], config: Config = None
) -> None:
    """Revoke a key at once, on every replica."""
    revoked = _with_store(config, lambda store: store.revoke(name))
    if not revoked:
        typer.echo(f"tokenrelay: no key named {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked key {name!r}")


def _day(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%M")
