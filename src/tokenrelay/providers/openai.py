"""`openai/<model>` and any OpenAI-compatible server (vLLM, Ollama, llama.cpp, ...).

Streams Chat Completions with `stream_options.include_usage`, so `done.usage` is the
upstream's own count.
"""

from __future__ import annotations

from typing import Any

from tokenrelay.providers.base import GenerationRequest
from tokenrelay.providers.upstream import UpstreamProvider, WireDecoder
from tokenrelay.wire import openai as wire
from tokenrelay.wire import openai_request

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIProvider(UpstreamProvider):
    path = "/chat/completions"
    supported = openai_request.SUPPORTED

    def unsupported(self, request: GenerationRequest) -> set[str]:
        return super().unsupported(request) | openai_request.unsupported_content(request)

    @staticmethod
    def headers(api_key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"} if api_key else {}

    @staticmethod
    def request_body(request: GenerationRequest) -> dict[str, Any]:
        return openai_request.request_body(request, request.model, stream=True)

    @staticmethod
    def new_decoder() -> WireDecoder:
        return wire.ChunkDecoder()
