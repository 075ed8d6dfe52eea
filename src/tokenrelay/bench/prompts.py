"""What the load tester asks: a different question per request, drawn from a seeded generator.

One question asked again and again makes a poor load. A deterministic server answers it the
same way every time: the `sim` seeds its timing from the prompt, so every request had the same
time to first token (p50 = p99), and a server with a prompt cache would serve it from the
cache. By default each request asks a question made of a template and a topic, drawn with a
`random.Random` seeded by `--seed`: the same seed asks the same questions in the same order, so
a run can be repeated. `--prompt TEXT` asks that one text every time (the benchmarks do, so
their figures compare run to run).
"""

from __future__ import annotations

import random

_TEMPLATES = (
    "Explain {topic} in plain words",
    "What are the trade-offs of {topic}?",
    "Give me a short guide to {topic}",
    "Why do engineers care about {topic} in production?",
    "Compare {topic} with {other}",
    "Write a python function that uses {topic}",
    "Summarize the history of {topic}",
    "What goes wrong with {topic} under load?",
    "How would you test {topic}?",
    "Describe {topic} to a new engineer",
)
_TOPICS = (
    "streaming relays",
    "connection pooling",
    "server-sent events",
    "backpressure",
    "TCP keep-alive",
    "rate limiting",
    "load balancers",
    "prompt caching",
    "retries with jitter",
    "HTTP/2 multiplexing",
    "consistent hashing",
    "circuit breakers",
    "message queues",
    "token buckets",
    "request coalescing",
    "tail latency",
    "event loops",
    "write-ahead logs",
    "graceful shutdown",
    "health checks",
    "CDN caching",
    "websocket fan-out",
    "idempotency keys",
    "distributed tracing",
)


def seeded(seed: int, purpose: str) -> random.Random:
    """A generator of its own per purpose (prompts, arrivals, cancels), so that adding, say,
    cancels to a run does not change the questions it asks."""
    return random.Random(f"{seed}:{purpose}")


class Prompts:
    """The question for each request in turn: `fixed` every time, or a seeded draw."""

    def __init__(self, seed: int, fixed: str | None = None) -> None:
        self.fixed = fixed
        self.random = seeded(seed, "prompts")

    def next(self) -> str:
        if self.fixed is not None:
            return self.fixed
        template = self.random.choice(_TEMPLATES)
        topic, other = self.random.sample(_TOPICS, 2)
        return template.format(topic=topic, other=other)
