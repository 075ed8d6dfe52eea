"""Settings: defaults, overridden by `tokenrelay.toml`, overridden by the environment.

The file is optional. Unknown sections or keys are an error at start-up, naming the key:
a typo should not silently fall back to a default. Upstream addresses only ever come from here
(or the providers' conventional environment variables), never from a request.

    [server]   host, port, default_model, cors_origins, max_body_bytes, max_tokens_limit,
               log_format ("text" | "json", or $TOKENRELAY_LOG_FORMAT)
    [streams]  keepalive, send_timeout, first_token_timeout, idle_timeout, resume_window,
               drain_timeout, ttl, max_log_bytes
    [sim]      ttft, tokens_per_second, jitter
    [aliases]  name = "provider/model"
    [redis]    url (or $TOKENRELAY_REDIS_URL), lease: share streams between replicas
    [upstreams.NAME]  kind ("openai" | "anthropic"), base_url, api_key_env, models,
               connect_timeout, transport ("auto" | "http1" | "httpx"): another upstream,
               served as NAME/<model>. `auto` takes httpx only when a proxy variable
               (HTTPS_PROXY, ...) applies to base_url, and the leaner http1 otherwise.

Keys are never written in the file: `api_key_env` names the environment variable that holds
one. OPENAI_API_KEY / OPENAI_BASE_URL and ANTHROPIC_API_KEY / ANTHROPIC_BASE_URL add the
`openai` and `anthropic` upstreams without any file.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_args

from tokenrelay._types import Chunking

CONFIG_ENV = "TOKENRELAY_CONFIG"


class SettingsError(ValueError):
    """The configuration file is unreadable or names something unknown."""


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    default_model: str = "sim/default"
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 1024 * 1024
    max_tokens_limit: int = 65536
    log_format: str = "text"  # or "json" (one object a line); $TOKENRELAY_LOG_FORMAT wins


@dataclass(frozen=True, slots=True)
class StreamsSection:
    keepalive: float = 15.0
    send_timeout: float = 30.0
    first_token_timeout: float = 60.0
    idle_timeout: float = 30.0
    resume_window: float = 30.0
    drain_timeout: float = 10.0
    ttl: float = 600.0
    max_log_bytes: int = 8 * 1024 * 1024
    total_timeout: float = 600.0
    max_retries: int = 2
    retry_base_delay: float = 0.5
    max_retry_after: float = 20.0
    commit_deadline: float = 2.0
    on_upstream_error: str = "fail"  # or "continue": see README, "Mid-stream recovery"
    chunking: Chunking = "token"  # the native API's default: "token", "word" or "line"
    compat_chunking: Chunking = "token"  # the OpenAI/Anthropic-compatible endpoints' chunking
    max_hold_ms: int = 50  # the longest word chunking holds text, and the json event spacing


@dataclass(frozen=True, slots=True)
class SimSection:
    ttft: float = 0.3
    tokens_per_second: float = 40.0
    jitter: float = 0.35


@dataclass(frozen=True, slots=True)
class RedisSection:
    url: str = ""  # empty: streams live in this process only
    lease: float = 10.0  # seconds without renewal before a stream's producer counts as lost


@dataclass(frozen=True, slots=True)
class UpstreamSection:
    kind: str = "openai"
    base_url: str = ""
    api_key_env: str = ""
    models: tuple[str, ...] = ()
    connect_timeout: float = 10.0
    transport: str = "auto"


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerSettings = ServerSettings()
    streams: StreamsSection = StreamsSection()
    sim: SimSection = SimSection()
    redis: RedisSection = RedisSection()
    aliases: dict[str, str] = field(default_factory=dict)
    upstreams: dict[str, UpstreamSection] = field(default_factory=dict)


_SECTIONS: dict[str, Any] = {
    "server": ServerSettings,
    "streams": StreamsSection,
    "sim": SimSection,
    "redis": RedisSection,
}
REDIS_ENV = "TOKENRELAY_REDIS_URL"


def _section(cls: Any, name: str, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise SettingsError(f"[{name}] must be a table")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise SettingsError(f"unknown key(s) in [{name}]: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        default = getattr(cls(), key)
        if isinstance(default, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SettingsError(f"[{name}] {key} must be a list of strings")
            value = tuple(value)
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif type(value) is not type(default):
            raise SettingsError(f"[{name}] {key} must be a {type(default).__name__}")
        values[key] = value
    return cls(**values)


def _upstreams(raw: Any) -> dict[str, UpstreamSection]:
    if not isinstance(raw, dict):
        raise SettingsError("[upstreams] must be a table of tables")
    upstreams = {}
    for name, table in raw.items():
        section: UpstreamSection = _section(UpstreamSection, f"upstreams.{name}", table)
        if name == "sim" or "/" in name:
            raise SettingsError(f"[upstreams.{name}]: that name is reserved or not allowed")
        if section.kind not in ("openai", "anthropic"):
            raise SettingsError(f'[upstreams.{name}] kind must be "openai" or "anthropic"')
        if not section.base_url.startswith(("http://", "https://")):
            raise SettingsError(f"[upstreams.{name}] base_url must be an http(s) URL")
        if section.transport not in ("auto", "http1", "httpx"):
            raise SettingsError(f'[upstreams.{name}] transport must be "auto", "http1" or "httpx"')
        upstreams[name] = section
    return upstreams


def _check(settings: Settings) -> Settings:
    if settings.server.log_format not in ("text", "json"):
        raise SettingsError('[server] log_format must be "text" or "json"')
    if settings.streams.on_upstream_error not in ("fail", "continue"):
        raise SettingsError('[streams] on_upstream_error must be "fail" or "continue"')
    for name in ("chunking", "compat_chunking"):
        if getattr(settings.streams, name) not in get_args(Chunking):
            raise SettingsError(f'[streams] {name} must be "token", "word" or "line"')
    if not 0 <= settings.streams.max_hold_ms <= 10_000:
        raise SettingsError("[streams] max_hold_ms must be between 0 and 10000")
    return settings


def parse_settings(data: dict[str, Any]) -> Settings:
    unknown = sorted(set(data) - {*_SECTIONS, "aliases", "upstreams"})
    if unknown:
        raise SettingsError(f"unknown section(s): {', '.join(unknown)}")
    sections = {name: _section(cls, name, data.get(name, {})) for name, cls in _SECTIONS.items()}
    aliases = data.get("aliases", {})
    if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
        raise SettingsError('[aliases] maps names to "provider/model" strings')
    upstreams = _upstreams(data.get("upstreams", {}))
    return _check(Settings(aliases=dict(aliases), upstreams=upstreams, **sections))


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read the file named by `path`, else by $TOKENRELAY_CONFIG, else defaults."""
    path = path or os.environ.get(CONFIG_ENV) or None
    if path is None:
        return Settings()
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path} is not valid TOML: {exc}") from None
    return parse_settings(data)


def redis_url(settings: Settings) -> str:
    """The environment wins, so replicas can share one file and differ in nothing else."""
    return os.environ.get(REDIS_ENV) or settings.redis.url


def with_server(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, server=replace(settings.server, **changes))
