"""What the app holds for its lifetime, and the per-request id."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from tokenrelay.auth.keys import KeyStore
from tokenrelay.auth.tokens import StreamTokens
from tokenrelay.providers.registry import ProviderRegistry
from tokenrelay.settings import Settings
from tokenrelay.streams.manager import StreamManager


@dataclass(slots=True)
class AppState:
    settings: Settings
    registry: ProviderRegistry
    manager: StreamManager
    keys: KeyStore
    tokens: StreamTokens

    @property
    def default_model(self) -> str:
        return self.settings.server.default_model


def request_id_of(connection: HTTPConnection) -> str:
    request_id: str = connection.scope.get("state", {}).get("request_id", "")
    return request_id
