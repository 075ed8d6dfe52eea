"""Settings: one declaration, read by the TOML file, the environment and the command line.

Each section is a pydantic model. `load_settings` reads `tokenrelay.toml` (optional), lays the
environment's overrides and then the command line's over it, and validates the result once,
strictly: `port = "80"` is refused, not converted. Unknown sections and keys are an error
naming them, so a typo never silently falls back to a default. The rest of the package reads
these models as they are (the stream manager takes `StreamsSection`, a provider its
`UpstreamSection`); nothing copies them field by field.

    [server]   host, port, default_model, cors_origins, max_body_bytes (native API),
               max_body_bytes_v1 (/v1), max_tokens_limit, log_format ("text" | "json")
    [streams]  keep-alive, timeouts, retries, chunking: see StreamsSection
    [sim]      ttft, tokens_per_second, jitter
    [aliases]  name = "provider/model"
    [redis]    url, lease: share streams between replicas
    [upstreams.NAME]  kind ("openai" | "anthropic"), base_url, api_key_env, models,
               connect_timeout: another upstream, served as NAME/<model>

Environment overrides (`ENVIRONMENT`): TOKENRELAY_REDIS_URL, TOKENRELAY_LOG_FORMAT; the file
itself is named by TOKENRELAY_CONFIG. Keys are never written in the file: `api_key_env`
names the variable that holds one. Upstream addresses come only from here (or the providers'
conventional variables, `providers/configured.py`), never from a request.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tokenrelay._types import Chunking

CONFIG_ENV = "TOKENRELAY_CONFIG"

# Environment variable -> (section, key) it overrides; it wins over the file.
ENVIRONMENT: dict[str, tuple[str, str]] = {
    "TOKENRELAY_REDIS_URL": ("redis", "url"),  # replicas can share one file and differ in nothing
    "TOKENRELAY_LOG_FORMAT": ("server", "log_format"),
    "TOKENRELAY_KEYS_FILE": ("auth", "keys_file"),
}


class SettingsError(ValueError):
    """The configuration file is unreadable, or names or sets something wrongly."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ServerSection(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    default_model: str = "sim/default"
    cors_origins: tuple[str, ...] = Field(default=(), strict=False)  # a TOML list
    # Per route family: the native API's bodies are chat text (1 MiB); the SDK-compatible
    # `/v1` endpoints carry images and documents inline, base64 (20 MiB holds a few).
    max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    max_body_bytes_v1: int = Field(default=20 * 1024 * 1024, ge=1)
    max_tokens_limit: int = Field(default=65536, ge=1)
    log_format: Literal["text", "json"] = "text"
    # What one connection may hold (server/connection.py).
    head_timeout: float = Field(default=10.0, gt=0)  # the request line and headers, whole
    body_timeout: float = Field(default=30.0, gt=0)  # the longest pause inside a request body
    keep_alive_timeout: int = Field(default=5, ge=1)  # seconds idle between requests
    max_connections: int = Field(default=4096, ge=1)  # also kept under the descriptor limit
    max_head_bytes: int = Field(default=64 * 1024, ge=1024)
    max_headers: int = Field(default=100, ge=10)


class StreamsSection(Section):
    keepalive: float = Field(default=15.0, gt=0)  # seconds between pings on an idle stream
    send_timeout: float = Field(default=30.0, gt=0)  # a client's socket must drain within this
    first_token_timeout: float = Field(default=60.0, gt=0)
    idle_timeout: float = Field(default=30.0, gt=0)  # between deltas, after the first
    total_timeout: float = Field(default=600.0, gt=0)
    resume_window: float = Field(default=30.0, ge=0)  # on_disconnect = "detach"
    drain_timeout: float = Field(default=10.0, ge=0)  # on SIGTERM
    ttl: float = Field(default=600.0, gt=0)  # how long an ended stream stays readable
    # What the memory log keeps of ended streams, all together; the oldest go first (then a
    # resume answers 410, as after the TTL). 256 MiB: ~30,000 answers of 200 tokens.
    max_ended_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    max_log_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_retries: int = Field(default=2, ge=0)
    retry_base_delay: float = Field(default=0.5, ge=0)
    max_retry_after: float = Field(default=20.0, ge=0)
    commit_deadline: float = Field(default=2.0, ge=0)  # the status line waits this for news
    on_upstream_error: Literal["fail", "continue"] = "fail"
    chunking: Chunking = "token"  # the native API's default
    compat_chunking: Chunking = "token"  # the OpenAI- and Anthropic-compatible endpoints'
    max_hold_ms: int = Field(default=50, ge=0, le=10_000)  # word chunking's hold limit


class SimSection(Section):
    ttft: float = Field(default=0.3, ge=0)  # seconds to the first token
    tokens_per_second: float = Field(default=40.0, ge=0)  # 0: no delay between tokens
    jitter: float = Field(default=0.35, ge=0, le=1)  # each delay varies by this fraction

    @property
    def instant(self) -> bool:
        return self.ttft == 0 and self.tokens_per_second == 0


class RedisSection(Section):
    url: str = ""  # empty: streams live in this process only
    cluster: bool = False  # url is one node of a Redis Cluster, which finds the others
    lease: float = Field(default=10.0, gt=0)  # seconds unrenewed before a producer is lost
    # How long a stream under way rides out an outage (a restart, a failover) before it ends
    # with store_unavailable; new requests are refused (503) from the first failure.
    grace: float = Field(default=5.0, ge=0)
    # When a replica dies mid-stream: "error" ends the stream with a retryable producer_lost;
    # "continue" has another replica take it over and continue the answer (docs/replicas.md).
    on_producer_lost: Literal["error", "continue"] = "error"


class AuthSection(Section):
    # Keys are required as soon as one exists, or always with `required`. They live in Redis
    # when it is configured, else in this file (TOKENRELAY_KEYS_FILE wins).
    required: bool = False
    keys_file: str = "tokenrelay-keys.json"


class UpstreamSection(Section):
    kind: Literal["openai", "anthropic"] = "openai"
    base_url: str = Field(pattern=r"^https?://[^\s/]+")
    api_key_env: str = ""
    models: tuple[str, ...] = Field(default=(), strict=False)  # listed; any name is passed on
    connect_timeout: float = Field(default=10.0, gt=0)


class Settings(Section):
    server: ServerSection = ServerSection()
    streams: StreamsSection = StreamsSection()
    sim: SimSection = SimSection()
    redis: RedisSection = RedisSection()
    auth: AuthSection = AuthSection()
    aliases: dict[str, str] = Field(default_factory=dict)
    upstreams: dict[str, UpstreamSection] = Field(default_factory=dict)

    def with_changes(self, **sections: Mapping[str, Any]) -> Settings:
        """These settings with some keys changed (`server={"port": 9000}`), validated again."""
        data = self.model_dump()
        for name, changes in sections.items():
            data[name] = {**data[name], **changes}
        return parse_settings(data)


def _where(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the file writes it: `[server] port`, `[upstreams.x] kind`."""
    parts = [str(part) for part in loc]
    if not parts:
        return "settings"
    if parts[0] == "upstreams" and len(parts) >= 3:
        return f"[upstreams.{parts[1]}] {'.'.join(parts[2:])}"
    if len(parts) == 1:
        return f"[{parts[0]}]"
    return f"[{parts[0]}] {'.'.join(parts[1:])}"


_TEXT = {
    "extra_forbidden": "unknown key",
    "string_pattern_mismatch": "must be an http(s) URL with a host",  # base_url, the only one
}
# Keys that earlier releases read, with what to do about them instead of "unknown key".
_REMOVED = {
    "transport": "no longer needed: every upstream uses one HTTP client now; delete the line",
}


def _messages(error: ValidationError) -> str:
    lines = []
    for item in error.errors(include_url=False, include_input=False):
        where, text = _where(item["loc"]), _TEXT.get(item["type"], item["msg"])
        if item["type"] == "extra_forbidden" and len(item["loc"]) == 1:
            where, text = f"[{item['loc'][0]}]", "unknown section"
        elif item["type"] == "extra_forbidden":
            text = _REMOVED.get(str(item["loc"][-1]), text)
        lines.append(f"{where}: {text}")
    return "; ".join(lines)


def _check_upstream_names(upstreams: Any) -> None:
    for name in upstreams if isinstance(upstreams, dict) else ():
        if name == "sim" or "/" in name:
            raise SettingsError(f"[upstreams.{name}]: that name is reserved or not allowed")


def parse_settings(data: Mapping[str, Any]) -> Settings:
    """Validate settings given as the TOML file's tables."""
    _check_upstream_names(data.get("upstreams"))
    try:
        return Settings.model_validate(dict(data))
    except ValidationError as exc:
        raise SettingsError(_messages(exc)) from None


def _read_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path} is not valid TOML: {exc}") from None


def _keys_file_beside(data: dict[str, Any], config: Path) -> None:
    """A relative `[auth] keys_file` (the default included) is the config file's neighbour,
    not the working directory's: `keys create` run elsewhere, or a server started from
    elsewhere, must find the same file, or the server would run without its keys."""
    auth = data.setdefault("auth", {})
    if not isinstance(auth, dict):
        return
    keys_file = auth.get("keys_file", AuthSection().keys_file)
    if isinstance(keys_file, str) and not Path(keys_file).is_absolute():
        auth["keys_file"] = str(config.resolve().parent / keys_file)


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """The file named by `path` (else $TOKENRELAY_CONFIG, else none), then the environment's
    overrides, then `overrides` (the command line's, by section), validated as one."""
    env = os.environ if env is None else env
    path = path or env.get(CONFIG_ENV) or None
    data = _read_file(path) if path is not None else {}
    if path is not None:
        _keys_file_beside(data, Path(path))
    layers: dict[str, dict[str, Any]] = {}
    for variable, (section, key) in ENVIRONMENT.items():
        if env.get(variable):
            layers.setdefault(section, {})[key] = env[variable]
    for section, changes in (overrides or {}).items():
        layers.setdefault(section, {}).update(changes)
    for section, changes in layers.items():
        table = data.get(section, {})
        data[section] = {**table, **changes} if isinstance(table, dict) else table
    return parse_settings(data)
