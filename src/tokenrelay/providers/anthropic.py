"""`anthropic/<model>`: the Messages API, streaming, with the system prompt at the top level."""

from __future__ import annotations

from typing import Any

from tokenrelay.providers.base import Continuation, GenerationRequest, prefill_continuation
from tokenrelay.providers.upstream import UpstreamProvider, WireDecoder
from tokenrelay.wire import anthropic as wire
from tokenrelay.wire import anthropic_request

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"


class AnthropicProvider(UpstreamProvider):
    path = "/v1/messages"
    supported = anthropic_request.SUPPORTED

    def unsupported(self, request: GenerationRequest) -> set[str]:
        return super().unsupported(request) | anthropic_request.unsupported_content(request)

    @staticmethod
    def headers(api_key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": API_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    @staticmethod
    def request_body(request: GenerationRequest) -> dict[str, Any]:
        return anthropic_request.request_body(request, request.model, stream=True)

    @staticmethod
    def new_decoder() -> WireDecoder:
        return wire.EventDecoder()

    def continuation(self, request: GenerationRequest, partial: str, produced: int) -> Continuation:
        return prefill_continuation(request, partial, produced)  # Anthropic continues a prefill
