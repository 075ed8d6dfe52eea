"""OpenAI Chat Completions requests, both ways.

`request_body` writes a GenerationRequest as the body an OpenAI-compatible upstream takes.
`conversation`, `tools_in` and `tool_choice_in` read the parts of a body tokenrelay was sent
(`/v1/chat/completions`, and the mock upstream) into the conversation model
(providers/content.py). Pure functions: the shapes are checked before (server/compat_request.py).

What has no OpenAI form: reasoning in an assistant turn's history (OpenAI-compatible servers
take none back, and some refuse it), so it is left out; documents given by URL
(`unsupported_content` names them, so they are refused). A tool result's `is_error` has no
field either: the result's text then begins "Error: ", the way tool errors usually read, so
the model still learns the call failed.
"""

from __future__ import annotations

from typing import Any

from tokenrelay._types import Role
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

# GenerationRequest's parameters that go into the body under the same name, when set.
_SAME_NAME = (
    "temperature",
    "response_format",
    "parallel_tool_calls",
    "top_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "top_logprobs",
    "user",
    "service_tier",
    "reasoning_effort",
)
SUPPORTED = frozenset({*_SAME_NAME, "tools", "tool_choice", "stop"})


def request_body(request: GenerationRequest, model: str, *, stream: bool) -> dict[str, Any]:
    own = request.dialect == "openai"  # the caller's own extra keys go back out
    body: dict[str, Any] = {
        "model": model,
        "messages": [_message_out(m) for m in request.messages],
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    if request.max_tokens is not None:
        name = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
        body[name] = request.max_tokens
    for name in _SAME_NAME:
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.stop:
        body["stop"] = list(request.stop)
    if request.tools:
        body["tools"] = [_tool_out(tool, own) for tool in request.tools]
    if request.tool_choice is not None:
        body["tool_choice"] = _tool_choice_out(request.tool_choice)
    return body


def unsupported_content(request: GenerationRequest) -> set[str]:
    """What Chat Completions has no form for, where the caller put it: a document by URL,
    an image or document in a tool result, an assistant turn or a system prompt, and another
    dialect's own
    keys. Anthropic's `cache_control` is the exception: OpenAI caches long prompts by
    itself, so the hint has nothing to add there (README, "Across dialects")."""
    refused = {
        f"{message.origin or 'messages'}.content"
        for message in request.messages
        for part in message.parts
        if (isinstance(part, Document) and not (part.data or part.text))
        or (message.role in ("tool", "assistant", "system") and not isinstance(part, Text))
    }
    if request.dialect != "openai":
        refused.update(path for path in request.extras if not path.endswith(".cache_control"))
    return refused


def _message_out(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        text = message.text
        if message.is_error and not text.lower().startswith("error"):
            text = f"Error: {text}"
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": text}
    out: dict[str, Any] = {"role": message.role}
    if message.role == "assistant":
        out["content"] = message.text or None
        if message.tool_calls:
            out["tool_calls"] = [_call_out(call) for call in message.tool_calls]
        return out
    parts = message.parts
    if message.role == "system" or all(isinstance(part, Text) for part in parts):
        out["content"] = message.text
    else:
        out["content"] = [_part_out(part) for part in parts]
    return out


def _part_out(part: Part) -> dict[str, Any]:
    if isinstance(part, Text):
        return {"type": "text", "text": part.text}
    if isinstance(part, Image):
        image: dict[str, Any] = {"url": part.url or f"data:{part.media_type};base64,{part.data}"}
        if part.detail:
            image["detail"] = part.detail
        return {"type": "image_url", "image_url": image}
    if part.text:
        return {"type": "text", "text": part.text}
    file = {"file_data": f"data:{part.media_type};base64,{part.data}"}
    if part.title:
        file["filename"] = part.title
    return {"type": "file", "file": file}


def _call_out(call: ToolCall) -> dict[str, Any]:
    function = {"name": call.name, "arguments": call.arguments}
    return {"id": call.id, "type": "function", "function": function}


def _tool_out(tool: Tool, own: bool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters}
    if tool.description:
        function["description"] = tool.description
    if own:
        function.update(tool.extra)  # `strict`, and what OpenAI adds later
    return {"type": "function", "function": function}


def _tool_choice_out(choice: ToolChoice) -> Any:
    if choice.mode == "tool":
        return {"type": "function", "function": {"name": choice.name}}
    return choice.mode


# ---------------------------------------------------------------- a body tokenrelay was sent


def conversation(messages: list[dict[str, Any]]) -> tuple[Message, ...]:
    """OpenAI's messages (checked shapes) as the conversation model."""
    return tuple(_message_in(message, f"messages[{i}]") for i, message in enumerate(messages))


def _message_in(message: dict[str, Any], origin: str) -> Message:
    role: Role = "system" if message["role"] == "developer" else message["role"]
    content = _content_in(message.get("content"))
    if role == "tool":
        call_id = message.get("tool_call_id") or ""
        return Message("tool", content, tool_call_id=call_id, origin=origin)
    calls = tuple(
        ToolCall(call["id"], call["function"]["name"], call["function"].get("arguments") or "")
        for call in message.get("tool_calls") or ()
    )
    thinking = tuple(
        Thinking(block.get("thinking", ""), block.get("signature", ""), block.get("data", ""))
        for block in message.get("thinking_blocks") or ()
    )
    return Message(role, content, tool_calls=calls, thinking=thinking, origin=origin)


def _content_in(content: Any) -> str | tuple[Part, ...]:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return tuple(_part_in(part) for part in content)


def _part_in(part: dict[str, Any]) -> Part:
    kind = part["type"]
    if kind == "text":
        return Text(part["text"])
    if kind == "image_url":
        image = part["image_url"]
        return Image(url=image["url"], detail=image.get("detail") or "")
    file = part["file"]  # "file": a PDF as a data URL
    media_type, _, data = str(file.get("file_data", "")).removeprefix("data:").partition(";base64,")
    return Document(data=data, media_type=media_type, title=file.get("filename") or "")


_KNOWN_FUNCTION = frozenset({"name", "description", "parameters"})


def tools_in(tools: list[dict[str, Any]] | None) -> tuple[Tool, ...]:
    found = []
    for tool in tools or ():
        function = tool["function"]
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        extra = {key: value for key, value in function.items() if key not in _KNOWN_FUNCTION}
        found.append(Tool(function["name"], function.get("description") or "", parameters, extra))
    return tuple(found)


def extras_in(tools: list[dict[str, Any]] | None) -> tuple[str, ...]:
    """Where the caller put keys of OpenAI's own (GenerationRequest.extras): a function's
    `strict`, so far the only place the request models let them in."""
    return tuple(
        f"tools[{i}].function.{key}"
        for i, tool in enumerate(tools or ())
        for key in tool["function"]
        if key not in _KNOWN_FUNCTION
    )


def tool_choice_in(choice: Any) -> ToolChoice | None:
    if choice is None:
        return None
    if isinstance(choice, str):
        return ToolChoice(choice)  # type: ignore[arg-type]  # checked: auto, none, required
    return ToolChoice("tool", choice["function"]["name"])
