"""`openai/<model>` and any OpenAI-compatible server (vLLM, Ollama, llama.cpp, ...).

Streams Chat Completions with `stream_options.include_usage`, so `done.usage` is the
upstream's own count. Model names are passed through: the upstream decides what exists.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from tokenrelay.providers.base import Delta, GenerationRequest, Provider
from tokenrelay.providers.upstream import UpstreamClient, UpstreamConfig
from tokenrelay.wire import openai as wire

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIProvider(Provider):
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
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = UpstreamClient(
            UpstreamConfig(name, base_url, headers, connect_timeout=connect_timeout)
        )

    def models(self) -> list[str]:
        return list(self._models)

    def supports(self, model: str) -> bool:
        return bool(model)

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        decoder = wire.ChunkDecoder()
        body = wire.request_body(request, request.model, stream=True)
        async with aclosing(self._client.events("/chat/completions", body)) as events:
            async for event in events:
                for delta in decoder.feed(event.data):
                    yield delta
                if decoder.finished:
                    break
        decoder.finish()

    async def aclose(self) -> None:
        await self._client.aclose()
