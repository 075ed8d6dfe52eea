"""A hand-off (what another replica needs to take a stream over) survives its trip through
Redis whole: every kind of part, call and reasoning, with its dialect's own keys."""

from __future__ import annotations

import pydantic
import pytest

from tokenrelay.providers.base import GenerationRequest
from tokenrelay.providers.content import (
    Document,
    Image,
    Message,
    Text,
    Thinking,
    Tool,
    ToolCall,
    ToolChoice,
)
from tokenrelay.streams.handoff import HandOff, dump, load


def _request() -> GenerationRequest:
    parts = (
        Text("look", {"cache_control": {"type": "ephemeral"}}),
        Image(url="https://example.com/a.png", detail="low"),
        Image(data="iVBORw0KGgo=", media_type="image/png"),
        Document(text="plain", title="notes"),
        Document(data="JVBERi0=", media_type="application/pdf"),
        Document(url="https://example.com/a.pdf"),
    )
    return GenerationRequest(
        model="default",
        messages=(
            Message("system", "be brief"),
            Message("user", parts),
            Message(
                "assistant",
                "calling",
                tool_calls=(ToolCall("c1", "get_weather", '{"city":"Paris"}'),),
                thinking=(Thinking("hmm", "sig=="), Thinking(redacted="opaque")),
            ),
            Message("tool", "18C", tool_call_id="c1", is_error=True),
        ),
        max_tokens=300,
        temperature=0.5,
        tools=(Tool("get_weather", "the weather", {"type": "object"}, {"strict": True}),),
        tool_choice=ToolChoice("tool", "get_weather"),
        stop=("\n\n",),
        dialect="anthropic",
        extras=("messages[1].content[0].cache_control",),
        request_id="req_1",
    )


def test_a_handoff_round_trips_exactly() -> None:
    handoff = HandOff(_request(), "sim/default", "detach", True, False, True)
    back = load(dump(handoff))
    assert back == handoff
    assert back.request.request_id == "req_1"  # not compared by ==, kept all the same
    kinds = [type(part) for part in back.request.messages[1].parts]
    assert kinds == [Text, Image, Image, Document, Document, Document]


def test_anything_else_is_refused_not_run() -> None:
    with pytest.raises(pydantic.ValidationError):
        load(b'{"request": "__import__(\\"os\\")", "model": "x"}')
