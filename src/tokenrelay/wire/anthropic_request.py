"""Anthropic Messages requests, both ways.

`request_body` writes a GenerationRequest as the body the Messages API takes: the system
prompt at the top level; tool results (our `tool` messages) as `tool_result` blocks in a user
turn, consecutive turns of one role merged, as the API requires; an assistant turn's
reasoning as `thinking` blocks with their signatures, byte for byte, ahead of its text and its
`tool_use` blocks. `conversation`, `tools_in` and `tool_choice_in` read a body tokenrelay was
sent (`/v1/messages`, and the mock upstream) into the conversation model. Pure functions: the
shapes are checked before (server/compat_request.py).

`response_format` is asked of Anthropic as its documented way to get JSON that follows a
schema: one forced tool whose input schema is the requested schema (`json_tool`). It cannot be
combined with the caller's own tools, so that combination is refused (`unsupported_content`).
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from tokenrelay.providers.base import GenerationRequest
from tokenrelay.providers.content import (
    Document,
    Image,
    Message,
    Part,
    Text,
    Thinking,
    Tool,
    ToolCall,
    ToolChoice,
)

DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; used when the caller gave none
JSON_TOOL = "json_answer"  # the forced tool that carries a JSON answer (json_tool)

_SAME_NAME = ("top_p", "top_k", "service_tier")
SUPPORTED = frozenset(
    {
        *_SAME_NAME,
        "temperature",
        "response_format",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "stop",
        "user",
        "thinking_budget",
    }
)


def request_body(request: GenerationRequest, model: str, *, stream: bool) -> dict[str, Any]:
    own = request.dialect == "anthropic"  # the caller's own extra keys go back out
    body: dict[str, Any] = {
        "model": model,
        "messages": _turns((m for m in request.messages if m.role != "system"), own),
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        "stream": stream,
    }
    system = _system_out([m for m in request.messages if m.role == "system"], own)
    if system:
        body["system"] = system
    for name in _SAME_NAME:
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, 1.0)  # Anthropic's range is 0..1
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.user is not None:
        body["metadata"] = {"user_id": request.user}
    if request.thinking_budget:
        body["thinking"] = {"type": "enabled", "budget_tokens": request.thinking_budget}
    if request.tools:
        body["tools"] = [_tool_out(tool, own) for tool in request.tools]
    choice = _tool_choice_out(request.tool_choice, request.parallel_tool_calls)
    if choice is not None:
        body["tool_choice"] = choice
    if request.response_format is not None:
        body.update(json_tool(request.response_format))
    return body


def unsupported_content(request: GenerationRequest) -> set[str]:
    """What the Messages API cannot take: JSON answers with the caller's tools, another
    dialect's own keys (OpenAI's `strict`), an image or document in a system prompt, and an
    image's `detail`."""
    refused = {"response_format"} if request.response_format and request.tools else set()
    if request.dialect != "anthropic":
        refused.update(request.extras)
    refused.update(  # a system prompt is text blocks only
        f"{message.origin or 'messages'}.content"
        for message in request.messages
        if message.role == "system" and any(not isinstance(p, Text) for p in message.parts)
    )
    detail = ".image_url.detail" if request.dialect == "openai" else ".detail"
    refused.update(  # Anthropic picks an image's resolution itself
        f"{message.origin or 'messages'}.content[{index}]{detail}"
        for message in request.messages
        for index, part in enumerate(message.parts)
        if isinstance(part, Image) and part.detail not in ("", "auto")
    )
    return refused


def _system_out(messages: list[Message], own: bool) -> str | list[dict[str, Any]]:
    """The system prompt: its text, or its blocks when they carry keys of their own
    (`cache_control` on a long system prompt is the usual place to cache)."""
    parts = [part for message in messages for part in message.parts]
    if own and any(part.extra for part in parts):
        return [_part_out(part, own) for part in parts]
    return "\n\n".join(message.text for message in messages)


def json_tool(response_format: dict[str, Any]) -> dict[str, Any]:
    """JSON from Anthropic: one tool whose input schema is the requested schema, forced. Its
    input then streams as `input_json_delta` events, which the decoder relays as text."""
    spec = response_format.get("json_schema") or {}
    schema = spec.get("schema") if isinstance(spec.get("schema"), dict) else {"type": "object"}
    tool = {
        "name": JSON_TOOL,
        "description": spec.get("description") or "Give the answer as this JSON value.",
        "input_schema": schema,
    }
    return {"tools": [tool], "tool_choice": {"type": "tool", "name": JSON_TOOL}}


def forced_json_tool(body: dict[str, Any]) -> bool:
    """Whether a Messages request body forces our JSON tool (see json_tool)."""
    choice = body.get("tool_choice")
    return isinstance(choice, dict) and choice.get("name") == JSON_TOOL


def _turns(messages: Any, own: bool) -> list[dict[str, Any]]:
    """Messages as turns: tool results in user turns, adjacent turns of one role merged."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = "user" if message.role == "tool" else message.role
        blocks = _blocks_out(message, own)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    return turns


def _blocks_out(message: Message, own: bool) -> list[dict[str, Any]]:
    if message.role == "tool":
        result: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": message.tool_call_id,
            "content": [_part_out(part, own) for part in message.parts],
        }
        if message.is_error:
            result["is_error"] = True
        return [_with_extra(result, message.extra, own)]
    blocks = [_thinking_out(block) for block in message.thinking]
    blocks += [_part_out(part, own) for part in message.parts]
    blocks += [_call_out(call, own) for call in message.tool_calls]
    return blocks


def _with_extra(block: dict[str, Any], extra: dict[str, Any], own: bool) -> dict[str, Any]:
    return {**block, **extra} if own and extra else block


def _thinking_out(block: Thinking) -> dict[str, Any]:
    if block.redacted:
        return {"type": "redacted_thinking", "data": block.redacted}
    return {"type": "thinking", "thinking": block.text, "signature": block.signature}


def _part_out(part: Part, own: bool) -> dict[str, Any]:
    block: dict[str, Any]
    if isinstance(part, Text):
        block = {"type": "text", "text": part.text}
    elif isinstance(part, Image):
        block = {"type": "image", "source": _source(part.url, part.data, part.media_type)}
    else:
        block = _document_out(part)
    return _with_extra(block, part.extra, own)


def _document_out(part: Document) -> dict[str, Any]:
    if part.text:
        source: dict[str, Any] = {"type": "text", "media_type": "text/plain", "data": part.text}
    else:
        source = _source(part.url, part.data, part.media_type)
    block: dict[str, Any] = {"type": "document", "source": source}
    if part.title:
        block["title"] = part.title
    return block


def _source(url: str, data: str, media_type: str) -> dict[str, Any]:
    """A URL, a data: URL or base64 data, as Anthropic's `source`."""
    if url.startswith("data:"):
        media_type, _, data = url.removeprefix("data:").partition(";base64,")
        url = ""
    if url:
        return {"type": "url", "url": url}
    return {"type": "base64", "media_type": media_type, "data": data}


def _call_out(call: ToolCall, own: bool) -> dict[str, Any]:
    try:
        arguments = orjson.loads(call.arguments) if call.arguments.strip() else {}
    except orjson.JSONDecodeError:
        arguments = {}  # the model's invalid JSON has no form in `input`; the call stays
    block = {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments}
    return _with_extra(block, call.extra, own)


def _tool_out(tool: Tool, own: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name, "input_schema": tool.parameters}
    if tool.description:
        out["description"] = tool.description
    return _with_extra(out, tool.extra, own)


_CHOICE_OUT = {"auto": "auto", "none": "none", "required": "any", "tool": "tool"}


def _tool_choice_out(choice: ToolChoice | None, parallel: bool | None) -> dict[str, Any] | None:
    if choice is None and parallel is not False:
        return None
    out: dict[str, Any] = {"type": _CHOICE_OUT[choice.mode] if choice else "auto"}
    if choice is not None and choice.mode == "tool":
        out["name"] = choice.name
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


# ---------------------------------------------------------------- a body tokenrelay was sent


def conversation(system: Any, messages: list[dict[str, Any]]) -> tuple[Message, ...]:
    """Anthropic's system prompt and messages (checked shapes) as the conversation model."""
    found: list[Message] = []
    if isinstance(system, str) and system:
        found.append(Message("system", system, origin="system"))
    elif system:
        found.append(Message("system", tuple(_part_in(block) for block in system), origin="system"))
    for index, message in enumerate(messages):
        found += _message_in(message, f"messages[{index}]")
    return tuple(found)


# The keys of each block (and of a tool) that the conversation model names; any other key is
# the block's `extra` (content.py), such as `cache_control` or `citations`.
_KNOWN = {
    "text": {"type", "text"},
    "image": {"type", "source"},
    "document": {"type", "source", "title"},
    "tool_use": {"type", "id", "name", "input"},
    "tool_result": {"type", "tool_use_id", "content", "is_error"},
    "tool": {"name", "description", "input_schema"},
}


def _extra(block: dict[str, Any], kind: str) -> dict[str, Any]:
    known = _KNOWN.get(kind, block.keys())
    return {key: value for key, value in block.items() if key not in known}


def extras_in(
    system: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> tuple[str, ...]:
    """Where the caller put keys of Anthropic's own (GenerationRequest.extras)."""
    found: list[str] = []

    def note(block: dict[str, Any], kind: str, path: str) -> None:
        found.extend(f"{path}.{key}" for key in _extra(block, kind))

    for j, block in enumerate(system if isinstance(system, list) else ()):
        note(block, "text", f"system[{j}]")
    for i, message in enumerate(messages):
        content = message["content"]
        for j, block in enumerate(content if isinstance(content, list) else ()):
            note(block, block["type"], f"messages[{i}].content[{j}]")
            inner = block.get("content") if block["type"] == "tool_result" else None
            for k, part in enumerate(inner if isinstance(inner, list) else ()):
                note(part, part["type"], f"messages[{i}].content[{j}].content[{k}]")
    for i, tool in enumerate(tools or ()):
        note(tool, "tool", f"tools[{i}]")
    return tuple(found)


def _message_in(message: dict[str, Any], origin: str) -> list[Message]:
    """One turn as messages: its tool results each a `tool` message, then the rest."""
    content = message["content"]
    if isinstance(content, str):
        return [Message(message["role"], content, origin=origin)]
    found: list[Message] = []
    parts: list[Part] = []
    thinking: list[Thinking] = []
    calls: list[ToolCall] = []
    for index, block in enumerate(content):
        kind = block["type"]
        if kind == "tool_result":
            found.append(_tool_result_in(block, f"{origin}.content[{index}]"))
        elif kind == "tool_use":
            arguments = orjson.dumps(block["input"]).decode()
            calls.append(ToolCall(block["id"], block["name"], arguments, _extra(block, kind)))
        elif kind == "thinking":
            thinking.append(Thinking(block.get("thinking", ""), block.get("signature", "")))
        elif kind == "redacted_thinking":
            thinking.append(Thinking(redacted=block.get("data", "")))
        else:
            parts.append(_part_in(block))
    if parts or calls or thinking:
        role: Literal["user", "assistant"] = message["role"]
        turn = Message(
            role, tuple(parts), tool_calls=tuple(calls), thinking=tuple(thinking), origin=origin
        )
        found.append(turn)
    return found


def _tool_result_in(block: dict[str, Any], origin: str) -> Message:
    content = block.get("content") or ""
    parts: str | tuple[Part, ...] = (
        content if isinstance(content, str) else tuple(_part_in(part) for part in content)
    )
    return Message(
        "tool",
        parts,
        tool_call_id=block["tool_use_id"],
        is_error=bool(block.get("is_error")),
        extra=_extra(block, "tool_result"),
        origin=origin,
    )


def _part_in(block: dict[str, Any]) -> Part:
    kind = block["type"]
    extra = _extra(block, kind)
    if kind == "text":
        return Text(block["text"], extra)
    source = block["source"]
    url, data, media_type = (
        source.get("url", ""),
        source.get("data", ""),
        source.get("media_type", ""),
    )
    if kind == "image":
        return Image(url=url, data=data, media_type=media_type, extra=extra)
    title = block.get("title") or ""
    if source["type"] == "text":
        return Document(text=data, title=title, extra=extra)
    return Document(url=url, data=data, media_type=media_type, title=title, extra=extra)


def tools_in(tools: list[dict[str, Any]] | None) -> tuple[Tool, ...]:
    return tuple(
        Tool(
            tool["name"],
            tool.get("description") or "",
            tool.get("input_schema") or {},
            _extra(tool, "tool"),
        )
        for tool in tools or ()
    )


_CHOICE_IN: dict[str, Literal["auto", "none", "required", "tool"]] = {
    "auto": "auto",
    "none": "none",
    "any": "required",
    "tool": "tool",
}


def tool_choice_in(choice: dict[str, Any] | None) -> tuple[ToolChoice | None, bool | None]:
    """The tool choice, and whether parallel calls are allowed (None: not said)."""
    if choice is None:
        return None, None
    parallel = False if choice.get("disable_parallel_tool_use") else None
    return ToolChoice(_CHOICE_IN[choice["type"]], choice.get("name") or ""), parallel
