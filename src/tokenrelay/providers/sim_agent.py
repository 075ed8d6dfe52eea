"""What the simulated model says as an agent: its reasoning, its tool calls, its answer after
tool results, and what it sees in the images and documents it is given.

Pure functions of the conversation, like `sim_text`: the same request always gets the same
reasoning, the same calls with the same arguments, the same answer.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from typing import Any

from tokenrelay._types import JSONObject
from tokenrelay.providers import sim_text
from tokenrelay.providers.content import Document, Image, Message, Tool, ToolChoice

REASONING = (
    "The question is about {topic}. Let me work out what matters most here. "
    "First, the basic idea; then the parts people usually get wrong; then a short example. "
    "I should keep it concrete and check each step before answering."
)


def compose_reasoning(question: str) -> str:
    topic = sim_text.topic_of(question)
    return REASONING.format(topic=topic)


def signature(reasoning: str) -> str:
    """A stand-in for Anthropic's signature: opaque, and the same for the same reasoning."""
    return hashlib.sha256(reasoning.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class PlannedCall:
    id: str
    name: str
    arguments: str  # JSON text


def plan_calls(
    tools: tuple[Tool, ...],
    choice: ToolChoice | None,
    parallel: bool | None,
    question: str,
) -> list[PlannedCall]:
    """The calls to make, as a model would: the named tool, else the first; with parallel
    calls allowed, the first two tools at once, or one tool once for each place or name the
    question gives ("Paris and Oslo": two calls). String arguments hold that subject."""
    if not tools or (choice is not None and choice.mode == "none"):
        return []
    if choice is not None and choice.mode == "tool":
        chosen = [tool for tool in tools if tool.name == choice.name][:1]
    elif parallel is not False and len(tools) >= 2:
        chosen = list(tools[:2])
    else:
        chosen = list(tools[:1])
    subjects = subjects_of(question) or [sim_text.topic_of(question)]
    if parallel is not False and len(chosen) == 1:
        pairs = [(chosen[0], subject) for subject in subjects[:MAX_PARALLEL]]
    else:
        pairs = [(tool, subjects[0]) for tool in chosen]
    calls = []
    for number, (tool, subject) in enumerate(pairs):
        rng = sim_text.rng_for("arguments", question, tool.name, subject)
        schema = tool.parameters if tool.parameters.get("properties") else _ANY_OBJECT
        value = _arguments(schema, subject, rng)
        digest = hashlib.blake2b(f"{question}\x1f{tool.name}\x1f{number}".encode(), digest_size=8)
        calls.append(PlannedCall(f"call_{digest.hexdigest()}", tool.name, json.dumps(value)))
    return calls


MAX_PARALLEL = 3  # calls of one tool at once


def subjects_of(question: str) -> list[str]:
    """The names in a question ("Paris", "New York"): capitalised words that do not begin a
    sentence, in order, once each."""
    found: list[str] = []
    for match in _NAME.finditer(question):
        before = question[: match.start()].rstrip()
        if not before or before[-1] in ".!?":
            continue  # capitalised by grammar, not a name
        if match[0] not in found:
            found.append(match[0])
    return found


_NAME = re.compile(r"\b[A-Z][a-zA-Z]+(?:\s+[A-Z][a-zA-Z]+)*")


def _arguments(schema: JSONObject, subject: str, rng: random.Random) -> Any:
    """Arguments that follow `schema`: its string properties hold the subject."""
    properties = schema.get("properties") or {}
    value = {}
    for key, spec in properties.items():
        if spec.get("type", "string") == "string" and not spec.get("enum"):
            value[key] = subject
        else:
            value[key] = sim_text.value_for_schema(spec, key, subject, rng)
    return value


_ANY_OBJECT = {"type": "object", "properties": {"query": {"type": "string"}}}


def before_calls(calls: list[PlannedCall]) -> str:
    """The text the sim says before it calls tools (an answer that mixes text and calls)."""
    names = " and ".join(f"`{name}`" for name in dict.fromkeys(call.name for call in calls))
    return f"Let me check that with {names}."


def after_results(question: str, results: list[Message]) -> str:
    """The answer once tool results came back: it says what they were."""
    topic = sim_text.topic_of(question)
    lines = [f"Here is what I found about {topic}:"]
    for result in results:
        text = " ".join(result.text.split())[:200] or "(no content)"
        status = "failed" if result.is_error else "returned"
        lines.append(f"- The tool {status}: {text}")
    lines.append("\nI hope this helps! Feel free to ask a follow-up question.")  # not in the list
    return "\n".join(lines)


def describe_attachments(message: Message) -> str:
    """What the sim sees in a turn's images and documents: a sentence each, or nothing."""
    seen = []
    for part in message.parts:
        if isinstance(part, Image):
            seen.append(f"an image ({_where(part.url, part.data, part.media_type)})")
        elif isinstance(part, Document):
            where = "plain text" if part.text else _where(part.url, part.data, part.media_type)
            title = f' titled "{part.title}"' if part.title else ""
            seen.append(f"a document{title} ({where})")
    if not seen:
        return ""
    return "You sent " + ", ".join(seen) + ".\n\n"


def _where(url: str, data: str, media_type: str) -> str:
    if url.startswith("data:"):
        media_type, _, data = url.removeprefix("data:").partition(";base64,")
        url = ""
    if url:
        return f"by URL, {url[:80]}"
    size = len(data) * 3 // 4
    return f"{media_type or 'unknown type'}, {size:,} bytes"
