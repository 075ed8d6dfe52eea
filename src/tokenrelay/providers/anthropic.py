"""`anthropic/<model>`: the Messages API, streaming, with the system prompt at the top level."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from tokenrelay.providers.base import (
    Continuation,
    Delta,
    GenerationRequest,
    Provider,
    prefill_continuation,
)
from tokenrelay.providers.upstream import UpstreamClient, UpstreamConfig
from tokenrelay.wire import anthropic as wire

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"


class AnthropicProvider(Provider):
    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str | None,
        models: list[str],
        *,
        connect_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self._models = models
        headers = {"anthropic-version": API_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        self._client = UpstreamClient(
            UpstreamConfig(name, base_url, headers, connect_timeout=connect_timeout)
        )

    def models(self) -> list[str]:
        return list(self._models)

    def supports(self, model: str) -> bool:
        return bool(model)

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        decoder = wire.EventDecoder()
        body = wire.request_body(request, request.model, stream=True)
        async with aclosing(self._client.events("/v1/messages", body)) as events:
            async for event in events:
                for delta in decoder.feed(event.event, event.data):
                    yield delta
                if decoder.finished:
                    break
        decoder.finish()

    def continuation(self, request: GenerationRequest, partial: str, produced: int) -> Continuation:
        return prefill_continuation(request, partial, produced)  # Anthropic continues a prefill

    async def aclose(self) -> None:
        await self._client.aclose()
