"""What the simulated model says, and how it is cut into sub-word tokens.

Everything is a pure function of the prompt (a seeded `random.Random`), so the same question
always gets the same answer, token for token: tests can rely on it, demos look alive.

Tokens imitate a BPE tokenizer without shipping one: short common words are one token with their
leading space (" the"), longer words are cut into 2-5 character pieces (" stream", "ing"),
punctuation and line breaks are tokens of their own, indentation is kept whole.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from typing import Any

from tokenrelay._types import JSONObject

_WORD_OR_OTHER = re.compile(r" ?[A-Za-z]+| ?[0-9]{1,3}|\n+| +|[^\sA-Za-z0-9]| ?[^\s]|\s")
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "can",
        "could",
        "do",
        "does",
        "explain",
        "for",
        "from",
        "how",
        "i",
        "in",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "please",
        "show",
        "should",
        "tell",
        "that",
        "the",
        "this",
        "to",
        "use",
        "using",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "would",
        "write",
        "you",
        "your",
        "give",
        "about",
        "into",
        "some",
        "make",
        "like",
        "need",
        "want",
        "describe",
    ]
)
_CODE_WORDS = re.compile(
    r"\b(code|function|script|implement|program|snippet|python|javascript|typescript|rust|"
    r"example in|class|algorithm)\b",
    re.IGNORECASE,
)
_TABLE_WORDS = re.compile(r"\b(compare|comparison|table|versus|vs)\b", re.IGNORECASE)

_OPENERS = [
    "Here's a clear overview of {topic}.",
    "Good question! Let's walk through {topic} step by step.",
    "Sure. {Topic} comes up often, so here is how it works in practice.",
    "Let's break down {topic} into the parts that matter.",
]
_SENTENCES = [
    "At its core, {topic} is about moving information reliably from one place to another.",
    "Most of the complexity comes from handling the cases where things go wrong.",
    "A good mental model is a pipeline: each stage does one job and hands its output on.",
    "In practice, the details depend on your constraints, such as latency and cost.",
    "The key trade-off is between simplicity and control over the edge cases.",
    "Measuring before optimising usually reveals that the bottleneck is somewhere unexpected.",
    "Teams that get {topic} right tend to start small and add complexity only when needed.",
    "It helps to think about what the user sees at each moment, not just the final result.",
    "Caching, batching and streaming are the three levers you will reach for most often.",
    "Errors should be reported honestly, with enough context to act on them.",
]
_POINTS = [
    "**Start simple**: get an end-to-end version of {topic} working first.",
    "**Measure**: record latency and throughput so you know where time goes.",
    "**Handle failure**: decide what happens on timeouts, retries and partial results.",
    "**Keep it observable**: log a request id with every step.",
    "**Bound resources**: cap memory and concurrency so one request cannot starve others.",
    "**Test the edges**: empty input, huge input, slow clients and dropped connections.",
]
_CLOSERS = [
    "If you share more about your use case, I can go into more detail on {topic}.",
    "Let me know if you'd like a deeper dive into any of these points.",
    "I hope this helps! Feel free to ask a follow-up question.",
]


def rng_for(*parts: str) -> random.Random:
    """A random source seeded by `parts`: the same parts give the same choices."""
    return _rng(*parts)


def _rng(*parts: str) -> random.Random:
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def topic_of(prompt: str) -> str:
    words = [w for w in re.findall(r"[A-Za-z][A-Za-z'-]+", prompt) if w.lower() not in _STOPWORDS]
    if not words:
        return "this topic"
    # Acronyms keep their capitals ("TCP handshakes"); other words read as lower case.
    return " ".join(w if w.isupper() and len(w) > 1 else w.lower() for w in words[:3])


def _fill(template: str, topic: str) -> str:
    return template.format(topic=topic, Topic=topic[:1].upper() + topic[1:])


def _code_block(topic: str, rng: random.Random) -> str:
    name = "_".join(re.findall(r"[a-z]+", topic)[:2]) or "process"
    step = rng.choice(["item.strip()", "item.lower()", "item[::-1]"])
    return (
        "```python\n"
        f"def {name}(items: list[str]) -> list[str]:\n"
        f'    """Process each item for {topic}."""\n'
        "    results = []\n"
        "    for item in items:\n"
        "        if not item:\n"
        "            continue\n"
        f"        results.append({step})\n"
        "    return results\n"
        "```"
    )


def _table(topic: str) -> str:
    return (
        "| Approach | Latency | Complexity |\n"
        "|---|---|---|\n"
        f"| Simple {topic} | Higher | Low |\n"
        "| Streaming | Low | Medium |\n"
        "| Batched | Medium | Medium |"
    )


def compose_answer(prompt: str) -> str:
    """A markdown answer that reads like an assistant's: prose, a list, code when asked for."""
    rng = _rng("answer", prompt)
    topic = topic_of(prompt)
    paragraphs = [_fill(rng.choice(_OPENERS), topic)]
    paragraphs.append(" ".join(_fill(s, topic) for s in rng.sample(_SENTENCES, 3)))
    points = rng.sample(_POINTS, rng.randint(3, 5))
    paragraphs.append("\n".join(f"{i}. {_fill(p, topic)}" for i, p in enumerate(points, 1)))
    if _CODE_WORDS.search(prompt):
        paragraphs.append("Here is a small example:")
        paragraphs.append(_code_block(topic, rng))
    if _TABLE_WORDS.search(prompt):
        paragraphs.append(_table(topic))
    paragraphs.append(" ".join(_fill(s, topic) for s in rng.sample(_SENTENCES, 3)))
    paragraphs.append(_fill(rng.choice(_CLOSERS), topic))
    return "\n\n".join(paragraphs)


def compose_endless(prompt: str, paragraph: int) -> str:
    """Paragraph number `paragraph` of an answer that never ends (for load and backpressure)."""
    rng = _rng("endless", prompt, str(paragraph))
    topic = topic_of(prompt)
    return " ".join(_fill(s, topic) for s in rng.sample(_SENTENCES, 4)) + "\n\n"


MAX_ARRAY_ITEMS = 100_000  # a schema's minItems is honoured up to this


def value_for_schema(schema: JSONObject, key: str, topic: str, rng: random.Random) -> Any:
    """A plausible value that follows `schema` (objects, arrays, enums, the scalar types)."""
    return _value_for_schema(schema, key, topic, rng)


def _value_for_schema(schema: JSONObject, key: str, topic: str, rng: random.Random) -> Any:
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: _value_for_schema(v, k, topic, rng) for k, v in props.items()}
    if kind == "array":
        items = schema.get("items") or {"type": "string"}
        low, high = schema.get("minItems", 2), schema.get("maxItems", 3)
        count = min(max(low, min(rng.randint(2, 3), high)), MAX_ARRAY_ITEMS)
        return [_value_for_schema(items, key, topic, rng) for _ in range(count)]
    if kind == "integer":
        return rng.randint(1, 100)
    if kind == "number":
        return round(rng.uniform(0, 1), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return f"{key.replace('_', ' ')} of {topic}"


def compose_json(prompt: str, response_format: JSONObject) -> str:
    """A JSON answer: shaped by the schema when one is given, a plausible object otherwise."""
    rng = _rng("json", prompt)
    topic = topic_of(prompt)
    schema = (response_format.get("json_schema") or {}).get("schema")
    if isinstance(schema, dict) and schema:
        value = _value_for_schema(schema, "value", topic, rng)
    else:
        value = {
            "topic": topic,
            "summary": " ".join(_fill(s, topic) for s in rng.sample(_SENTENCES, 2)),
            "key_points": [_fill(p, topic).replace("**", "") for p in rng.sample(_POINTS, 3)],
            "confidence": round(rng.uniform(0.7, 0.99), 2),
            "needs_follow_up": rng.random() < 0.5,
        }
    return json.dumps(value, indent=2, ensure_ascii=False)


def tokenize(text: str, seed: str = "") -> list[str]:
    """Cut text into sub-word tokens; joining them gives `text` back exactly."""
    rng = _rng("tokens", seed)
    tokens: list[str] = []
    for match in _WORD_OR_OTHER.finditer(text):
        piece = match.group()
        if len(piece.strip()) <= 5 or not piece.strip().isalpha():
            tokens.append(piece)
            continue
        while piece:
            cut = rng.randint(3, 6) if piece[0] == " " else rng.randint(2, 5)
            tokens.append(piece[:cut])
            piece = piece[cut:]
    return tokens


# What `sim/hostile` answers: the payloads a chat page must show as text or drop, never run or
# load. A renderer is safe if, after this answer, no script ran, no request left the page's
# origin, and every link goes to http(s) or mailto.
HOSTILE_ANSWER = """Here are the payloads, as a model might write them.

<script>window.__hostile = "script tag ran"</script>

<img src="https://example.invalid/pixel.png" onerror="window.__hostile = 'img onerror ran'">

<iframe src="https://example.invalid/frame"></iframe>

[a javascript link](javascript:window.__hostile='link ran')

[a data link](data:text/html,<script>1</script>)

![a remote image](https://example.invalid/tracker.png)

<a href="https://example.invalid" onclick="window.__hostile='onclick ran'">raw anchor</a>

<svg onload="window.__hostile='svg ran'"></svg>

```html
<script>this one is inside a code block and should show as text</script>
```

| cell | <b onmouseover="window.__hostile='cell ran'">bold?</b> |
|---|---|
| <style>body{display:none}</style> | [ok link](https://example.com/docs) |

That is all."""
