"""What another replica needs to take a stream over when its producer dies (opt-in:
`[redis] on_producer_lost = "continue"`): the request as the provider was given it, and the
options the stream was started with. It is stored beside the stream's events when the stream
is created, and deleted when the stream ends.

Stored as JSON (pydantic's dataclass support), never pickled: whoever can write to Redis must
not be able to run code in a replica.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import TypeAdapter

from tokenrelay._types import DisconnectPolicy
from tokenrelay.providers.base import GenerationRequest


@dataclass(frozen=True, slots=True)
class HandOff:
    request: GenerationRequest
    model: str  # the canonical name (provider/model), which the registry resolves
    on_disconnect: DisconnectPolicy = "cancel"
    continue_on_error: bool = False
    include_reasoning: bool = True
    validate_tool_arguments: bool = False
    owner: str = ""  # the key's name, whose usage and slot it is
    key_digest: str = ""  # and its digest, so that revoking the key still ends it


_ADAPTER = TypeAdapter(HandOff)


def dump(handoff: HandOff) -> bytes:
    return _ADAPTER.dump_json(handoff)


def load(data: bytes) -> HandOff:
    """The stored hand-off; pydantic's ValidationError if it is not one."""
    return _ADAPTER.validate_json(data)
