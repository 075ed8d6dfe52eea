"""What a mock request asks for, read from its model name.

The model name is the sim's (`fast`, `default+error-after-5`, see providers/sim.py) plus parts
only an HTTP upstream can show:

    status-N (N: 302 400 401 429 500 503 529)           fail with that status before streaming
                                                        (302: to REDIRECT_TARGET, elsewhere)
    leak-secret                                         put MOCK_SECRET in every error body
    cached-N | cache-write-N                            report N more prompt tokens, read from
                                                        (written to) the prompt cache
    tag-<anything>                                      a label for the record; no effect

Any other name (`gpt-4o`, `claude-sonnet-4-20250514`) is the sim's default variant, so users'
own apps work against the mock unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tokenrelay.providers.sim import SimTiming, SimVariant, parse_variant

MOCK_SECRET = "sk-mock-SECRET-0d6f3a"  # tests assert this never leaves tokenrelay
_STATUSES = {f"status-{n}": n for n in (302, 400, 401, 429, 500, 503, 529)}
REDIRECT_TARGET = "http://192.0.2.1/v1/elsewhere"  # TEST-NET-1: nothing answers there
_CACHE_PART = re.compile(r"(cached|cache-write)-(\d{1,6})")


@dataclass(frozen=True, slots=True)
class Scenario:
    sim_model: str  # the model name the sim provider should run
    status: int | None = None
    leak_secret: bool = False
    cached: int = 0  # prompt tokens read from the cache, on top of the counted prompt
    cache_write: int = 0  # prompt tokens written to the cache (Anthropic's figure)


def read_scenario(model: str, timing: SimTiming) -> Scenario:
    parts = model.split("+")
    status = next((_STATUSES[p] for p in parts if p in _STATUSES), None)
    leak = "leak-secret" in parts
    cache = {"cached": 0, "cache-write": 0}
    for part in parts:
        if match := _CACHE_PART.fullmatch(part):
            cache[match[1]] = int(match[2])
    rest = [
        p
        for p in parts
        if p not in _STATUSES
        and p != "leak-secret"
        and not p.startswith("tag-")
        and not _CACHE_PART.fullmatch(p)
    ]
    sim_model = "+".join(rest)
    variant: SimVariant | None = parse_variant(sim_model, timing) if sim_model else None
    return Scenario(
        sim_model if variant else "default", status, leak, cache["cached"], cache["cache-write"]
    )
