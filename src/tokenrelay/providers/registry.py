"""Model names are `provider/model`; the registry resolves them to a provider and a model."""

from __future__ import annotations

from tokenrelay.errors import UnknownModel
from tokenrelay.providers.base import Provider


class ProviderRegistry:
    def __init__(self, providers: list[Provider], aliases: dict[str, str] | None = None) -> None:
        self._providers = {p.name: p for p in providers}
        self._aliases = dict(aliases or {})

    @property
    def providers(self) -> list[Provider]:
        return list(self._providers.values())

    def known_models(self) -> list[str]:
        names = [f"{p.name}/{m}" for p in self._providers.values() for m in p.models()]
        return sorted(self._aliases) + names

    def resolve(self, name: str) -> tuple[Provider, str, str]:
        """Return (provider, model without prefix, canonical `provider/model` name)."""
        canonical = self._aliases.get(name, name)
        provider_name, slash, model = canonical.partition("/")
        provider = self._providers.get(provider_name)
        if not slash or provider is None or not model or not provider.supports(model):
            raise UnknownModel(self.known_models())
        return provider, model, canonical

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
