"""Starting a generation, for every route: parameters the upstream cannot honour are refused
first, by the names the caller used, before anything is started or billed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from tokenrelay.errors import FieldProblem, InvalidRequest
from tokenrelay.providers.base import GenerationRequest, Provider
from tokenrelay.server.auth import check_model, key_of
from tokenrelay.server.middleware import note_stream
from tokenrelay.server.state import AppState


def refuse_unsupported(
    provider: Provider, generation: GenerationRequest, names: Mapping[str, str]
) -> None:
    """InvalidRequest naming each field `provider` cannot honour (`names` maps our parameter
    names to the dialect's)."""
    _refuse_a_choice_of_no_tool(generation)
    refused = sorted(provider.unsupported(generation))
    if refused:
        problem = f"is not supported by the {provider.name} provider"
        raise InvalidRequest([FieldProblem(names.get(name, name), problem) for name in refused])


def _refuse_a_choice_of_no_tool(generation: GenerationRequest) -> None:
    """A forced call needs a tool to call; every upstream refuses this, so it is ours to say
    which field is wrong, before anything is billed."""
    choice = generation.tool_choice
    if choice is None or choice.mode in ("auto", "none"):
        return
    if not generation.tools:
        raise InvalidRequest([FieldProblem("tool_choice", "asks for a tool call, with no tools")])
    if choice.mode == "tool" and all(tool.name != choice.name for tool in generation.tools):
        field = (
            "tool_choice.function.name" if generation.dialect == "openai" else "tool_choice.name"
        )
        raise InvalidRequest([FieldProblem(field, "names no tool in tools")])


async def start_generation(
    request: Request,
    state: AppState,
    provider: Provider,
    generation: GenerationRequest,
    canonical: str,
    names: Mapping[str, str],
    **options: Any,
) -> str:
    """Start `generation` on `provider` (StreamManager.start's `options`); its stream id,
    owned by the caller's key."""
    check_model(request, canonical)
    refuse_unsupported(provider, generation, names)
    key = key_of(request)
    stream_id = await state.manager.start(generation, provider, canonical, key=key, **options)
    note_stream(request.scope, stream_id, canonical)
    return stream_id
