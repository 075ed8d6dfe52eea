"""What a mock request asks for, read from its model name.

The model name is the sim's (`fast`, `default+error-after-5`, see providers/sim.py) plus parts
only an HTTP upstream can show:

    status-429 | status-500 | status-503 | status-529   fail with that status before streaming
    leak-secret                                         put MOCK_SECRET in every error body
    tag-<anything>                                      a label for the record; no effect

Any other name (`gpt-4o`, `claude-sonnet-4-20250514`) is the sim's default variant, so users'
own apps work against the mock unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenrelay.providers.sim import SimTiming, SimVariant, parse_variant

MOCK_SECRET = "sk-mock-SECRET-0d6f3a"  # tests assert this never leaves tokenrelay
_STATUSES = {"status-429": 429, "status-500": 500, "status-503": 503, "status-529": 529}


@dataclass(frozen=True, slots=True)
class Scenario:
    sim_model: str  # the model name the sim provider should run
    status: int | None = None
    leak_secret: bool = False


def read_scenario(model: str, timing: SimTiming) -> Scenario:
    parts = model.split("+")
    status = next((_STATUSES[p] for p in parts if p in _STATUSES), None)
    leak = "leak-secret" in parts
    rest = [
        p for p in parts if p not in _STATUSES and p != "leak-secret" and not p.startswith("tag-")
    ]
    sim_model = "+".join(rest)
    variant: SimVariant | None = parse_variant(sim_model, timing) if sim_model else None
    return Scenario(sim_model if variant else "default", status, leak)
