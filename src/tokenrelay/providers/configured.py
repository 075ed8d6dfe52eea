"""The providers a server offers: `sim` always, upstreams from the environment and settings."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from tokenrelay.providers.anthropic import DEFAULT_BASE_URL as ANTHROPIC_URL
from tokenrelay.providers.anthropic import AnthropicProvider
from tokenrelay.providers.base import Provider
from tokenrelay.providers.openai import DEFAULT_BASE_URL as OPENAI_URL
from tokenrelay.providers.openai import OpenAIProvider
from tokenrelay.providers.sim import SimProvider
from tokenrelay.settings import Settings, UpstreamSection

OPENAI_MODELS = ("gpt-4o", "gpt-4o-mini")
ANTHROPIC_MODELS = ("claude-sonnet-4-20250514", "claude-3-5-haiku-latest")


_CONVENTIONAL: list[tuple[str, Literal["openai", "anthropic"], str, str, str, tuple[str, ...]]] = [
    # (name, kind, key variable, base URL variable, default URL, models to list)
    ("openai", "openai", "OPENAI_API_KEY", "OPENAI_BASE_URL", OPENAI_URL, OPENAI_MODELS),
    (
        "anthropic",
        "anthropic",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        ANTHROPIC_URL,
        ANTHROPIC_MODELS,
    ),
]


def _from_environment(env: Mapping[str, str]) -> dict[str, UpstreamSection]:
    return {
        name: UpstreamSection(
            kind=kind, base_url=env.get(url_var) or url, api_key_env=key_var, models=models
        )
        for name, kind, key_var, url_var, url, models in _CONVENTIONAL
        if env.get(key_var) or env.get(url_var)
    }


def upstream_sections(
    settings: Settings, env: Mapping[str, str] | None = None
) -> dict[str, UpstreamSection]:
    """Upstreams by name; the settings file wins over the environment for the same name."""
    return {**_from_environment(os.environ if env is None else env), **settings.upstreams}


def build_providers(settings: Settings, env: Mapping[str, str] | None = None) -> list[Provider]:
    env = os.environ if env is None else env
    providers: list[Provider] = [SimProvider(settings.sim)]
    for name, section in upstream_sections(settings, env).items():
        key = env.get(section.api_key_env) if section.api_key_env else None
        kind = OpenAIProvider if section.kind == "openai" else AnthropicProvider
        providers.append(kind(name, section, key))
    return providers
