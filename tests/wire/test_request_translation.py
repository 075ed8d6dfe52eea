"""Requests translated between the dialects: what each upstream is sent, and what it refuses.

A dialect's own keys (Anthropic's `cache_control` and `citations`, OpenAI's `strict`) go back
out byte for byte to an upstream of the same dialect, and are refused by the caller's name for
them by the other, but for `cache_control`, which OpenAI has no need of (it caches by itself).
What one API cannot carry at all (a document by URL for OpenAI, an image's `detail` for
Anthropic, an image in a tool result for OpenAI) is refused where the caller put it.
"""

from __future__ import annotations

from typing import Any

from tokenrelay.providers.anthropic import AnthropicProvider
from tokenrelay.providers.base import GenerationRequest
from tokenrelay.providers.openai import OpenAIProvider
from tokenrelay.server.compat_request import (
    AnthropicMessagesRequest,
    OpenAIChatRequest,
    validate_compat,
)
from tokenrelay.settings import UpstreamSection
from tokenrelay.wire import anthropic_request, openai_request

OPENAI = OpenAIProvider("openai", UpstreamSection(base_url="http://127.0.0.1:9/v1"), None)
ANTHROPIC = AnthropicProvider("anthropic", UpstreamSection(base_url="http://127.0.0.1:9"), None)
CACHE = {"type": "ephemeral"}
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}}


def _anthropic(**body: Any) -> GenerationRequest:
    data = {"model": "m", "max_tokens": 100, **body}
    return validate_compat(AnthropicMessagesRequest, data, 65536).to_generation("m", "")


def _openai(**body: Any) -> GenerationRequest:
    data = {"model": "m", **body}
    return validate_compat(OpenAIChatRequest, data, 65536).to_generation("m", "")


def _agent_turns() -> GenerationRequest:
    """An Anthropic agent's request that caches its system prompt, tools and history."""
    return _anthropic(
        system=[{"type": "text", "text": "You are terse.", "cache_control": CACHE}],
        tools=[
            {"name": "weather", "input_schema": WEATHER, "cache_control": CACHE},
        ],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Paris?"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Paris"}}
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": "18 C",
                        "cache_control": CACHE,
                    }
                ],
            },
        ],
    )


def test_anthropic_cache_points_reach_an_anthropic_upstream_where_they_were() -> None:
    request = _agent_turns()
    assert ANTHROPIC.unsupported(request) == set()
    body = anthropic_request.request_body(request, "claude", stream=True)
    assert body["system"] == [{"type": "text", "text": "You are terse.", "cache_control": CACHE}]
    assert body["tools"][0]["cache_control"] == CACHE
    result = body["messages"][2]["content"][0]
    assert result["type"] == "tool_result"
    assert result["cache_control"] == CACHE


def test_cache_points_are_not_needed_by_an_openai_upstream() -> None:
    request = _agent_turns()
    assert OPENAI.unsupported(request) == set()  # OpenAI caches long prefixes by itself
    body = openai_request.request_body(request, "gpt", stream=True)
    assert "cache_control" not in str(body)
    assert body["messages"][0] == {"role": "system", "content": "You are terse."}
    assert body["messages"][2]["tool_calls"][0]["function"]["arguments"] == '{"city":"Paris"}'
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "t1", "content": "18 C"}


def test_citations_are_refused_by_an_openai_upstream_where_the_caller_put_them() -> None:
    document = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "The sky is blue."},
        "citations": {"enabled": True},
    }
    request = _anthropic(
        system="Be brief.",
        messages=[{"role": "user", "content": [document, {"type": "text", "text": "Colour?"}]}],
    )
    assert OPENAI.unsupported(request) == {"messages[0].content[0].citations"}
    body = anthropic_request.request_body(request, "claude", stream=True)
    assert body["messages"][0]["content"][0]["citations"] == {"enabled": True}


def test_openai_strict_tools_go_to_openai_and_are_refused_by_anthropic() -> None:
    function = {"name": "weather", "parameters": WEATHER, "strict": True}
    tool = {"type": "function", "function": function}
    request = _openai(messages=[{"role": "user", "content": "Paris?"}], tools=[tool])
    body = openai_request.request_body(request, "gpt", stream=True)
    assert body["tools"][0]["function"]["strict"] is True
    assert OPENAI.unsupported(request) == set()
    assert ANTHROPIC.unsupported(request) == {"tools[0].function.strict"}


def test_what_one_api_cannot_carry_is_refused_where_the_caller_put_it() -> None:
    pdf_by_url = {"type": "document", "source": {"type": "url", "url": "https://x.test/a.pdf"}}
    picture = {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}
    request = _anthropic(
        system="Be brief.",  # not a message in Anthropic's API: the indices stay the caller's
        messages=[
            {"role": "user", "content": [pdf_by_url]},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": "snap", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t", "content": [picture]}],
            },
        ],
    )
    assert OPENAI.unsupported(request) == {
        "messages[0].content",  # a document by URL
        "messages[2].content[0].content",  # an image in a tool result
    }
    assert ANTHROPIC.unsupported(request) == set()


def test_an_image_detail_is_refused_by_anthropic_unless_it_is_auto() -> None:
    def asking(detail: str) -> GenerationRequest:
        image = {
            "type": "image_url",
            "image_url": {"url": "https://x.test/a.png", "detail": detail},
        }
        text = {"type": "text", "text": "What is it?"}
        return _openai(messages=[{"role": "user", "content": [text, image]}])

    assert ANTHROPIC.unsupported(asking("high")) == {"messages[0].content[1].image_url.detail"}
    assert ANTHROPIC.unsupported(asking("auto")) == set()
    assert OPENAI.unsupported(asking("high")) == set()


def test_an_openai_caller_asks_an_anthropic_upstream_to_think_with_the_extension() -> None:
    thinking = {"type": "enabled", "budget_tokens": 2048}
    request = _openai(messages=[{"role": "user", "content": "Why?"}], thinking=thinking)
    assert ANTHROPIC.unsupported(request) == set()
    body = anthropic_request.request_body(request, "claude", stream=True)
    assert body["thinking"] == thinking
    assert OPENAI.unsupported(request) == {"thinking_budget"}  # named `thinking` at the route


def test_a_failed_tool_result_says_so_in_its_text_to_an_openai_upstream() -> None:
    call = {"type": "tool_use", "id": "t1", "name": "weather", "input": {}}
    request = _anthropic(
        messages=[
            {"role": "user", "content": "Paris?"},
            {"role": "assistant", "content": [call]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": "timed out",
                        "is_error": True,
                    }
                ],
            },
        ],
    )
    body = openai_request.request_body(request, "gpt", stream=True)
    assert body["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "t1",
        "content": "Error: timed out",
    }
    anthropic_body = anthropic_request.request_body(request, "claude", stream=True)
    assert anthropic_body["messages"][-1]["content"][0]["is_error"] is True


def test_a_system_prompt_with_an_image_is_refused_by_both_upstreams() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}
    request = _openai(
        messages=[
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}, image]},
            {"role": "user", "content": "Hi"},
        ]
    )
    assert OPENAI.unsupported(request) == {"messages[0].content"}
    assert ANTHROPIC.unsupported(request) == {"messages[0].content"}
