"""`sim`: the embedded simulated LLM. No network, no keys, no tokenizer download.

A model name is one or more parts joined by `+`, for example `sim/default`, `sim/fast`,
`sim/fast+error-after-5`. At most one timing part and one fault part:

    timing   default        ~300 ms to first token, ~40 tokens/s with jitter ([sim] settings)
             fast           no delays at all (tests, benchmarks)
             slow-start     30 s to first token, then default speed (cancel-while-waiting demos)
    content  endless        never finishes on its own: stops at max_tokens (load, backpressure)
             hostile        an answer made of script, HTML and link payloads (renderer safety)
             think          reasons before answering (as it does when the request asks for
                            reasoning: `reasoning_effort` or a thinking budget), with a signature
             tools          with tools given, says a sentence and calls them: the first two at
                            once when parallel calls are allowed, else the first; after tool
                            results, answers from them
    faults   rate-limit              429-style failure before the first token (retry_after 1 s)
             error-after-N           upstream error after N tokens
             stall-after-N           stops sending after N tokens, without closing
             content-filter-after-N  content filter stops the answer after N tokens
             reset-after-N           connection reset after N tokens
                                     (N counts the text's tokens and the pieces of a call's
                                     arguments alike)

Answers are deterministic for a given conversation (`sim_text`, `sim_agent`). The sampling
parameters (`temperature`, `top_p`, `seed`, ...) are accepted and have no effect: determinism
is worth more to tests and demos than variety. A forced tool choice (`required`, or a named
tool) makes any variant call. Images and documents in the last user turn are described at the
start of the answer; nothing is fetched.

The sim follows continuations (`Provider.continuation`): given its own partial answer as an
assistant prefill, or followed by the continuation prompt, it carries on from where that
stopped. Its faults are transient: a continuation does not hit them again, the way a retried
connection usually does not reset at the same byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
import re
from collections.abc import AsyncGenerator, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from tokenrelay.errors import ContentFiltered, NetworkError, RateLimited, UpstreamError
from tokenrelay.providers import sim_agent, sim_text
from tokenrelay.providers.base import (
    CONTINUE_PROMPT,
    PARAMETERS,
    Continuation,
    Delta,
    GenerationRequest,
    Provider,
    ToolDelta,
    Usage,
    prefill_continuation,
)
from tokenrelay.providers.content import Message
from tokenrelay.settings import SimSection

ENDLESS_CAP = 100_000  # tokens, when an endless answer has no max_tokens


SimTiming = SimSection  # the [sim] settings are the default timing; variants change it
INSTANT = SimTiming(ttft=0.0, tokens_per_second=0.0, jitter=0.0)
_FAULTS = {
    "error-after": "error",
    "stall-after": "stall",
    "content-filter-after": "content_filter",
    "reset-after": "reset",
}
_FAULT_PART = re.compile(r"(error-after|stall-after|content-filter-after|reset-after)-(\d{1,6})")


@dataclass(frozen=True, slots=True)
class SimVariant:
    timing: SimTiming
    endless: bool = False
    hostile: bool = False
    think: bool = False
    tools: bool = False
    fault: str | None = None  # rate_limit | error | stall | content_filter | reset
    fault_after: int = 0


def parse_variant(model: str, default: SimTiming) -> SimVariant | None:
    """The variant a model name asks for, or None if the name is not a sim model."""
    variant = SimVariant(timing=default)
    timing_set = fault_set = False
    parts = model.split("+")
    if len(parts) != len(set(parts)):
        return None
    for part in parts:
        if part in ("default", "fast", "slow-start") and not timing_set:
            timing_set = True
            slow_start = default.model_copy(update={"ttft": 30.0})
            timing = {"default": default, "fast": INSTANT}.get(part, slow_start)
            variant = replace(variant, timing=timing)
        elif part == "endless":
            variant = replace(variant, endless=True)
        elif part == "hostile":
            variant = replace(variant, hostile=True)
        elif part == "think":
            variant = replace(variant, think=True)
        elif part == "tools":
            variant = replace(variant, tools=True)
        elif part == "rate-limit" and not fault_set:
            fault_set = True
            variant = replace(variant, fault="rate_limit")
        elif (match := _FAULT_PART.fullmatch(part)) and not fault_set:
            fault_set = True
            variant = replace(variant, fault=_FAULTS[match[1]], fault_after=int(match[2]))
        else:
            return None
    return variant


class SimProvider(Provider):
    name = "sim"
    supported = frozenset(PARAMETERS)  # see the module docstring

    def __init__(self, timing: SimTiming | None = None) -> None:
        self.timing = timing or SimTiming()

    def models(self) -> list[str]:
        return [
            "default",
            "fast",
            "slow-start",
            "endless",
            "hostile",
            "think",
            "tools",
            "think+tools",
            "rate-limit",
            "error-after-20",
            "stall-after-20",
            "content-filter-after-20",
            "reset-after-20",
        ]

    def supports(self, model: str) -> bool:
        return parse_variant(model, self.timing) is not None

    def continuation(self, request: GenerationRequest, partial: str, produced: int) -> Continuation:
        return prefill_continuation(request, partial, produced)

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        variant = parse_variant(request.model, self.timing)
        if variant is None:  # the registry checked already; this is a programming error
            raise ValueError(f"not a sim model: {request.model!r}")
        seed = request.prompt_text
        question, prefill = _question_and_prefill(request.messages)
        if prefill is not None:
            variant = replace(variant, fault=None)  # faults are transient (module doc)
        pace = _Pacer(variant.timing, seed)
        await pace.first_token()
        if variant.fault == "rate_limit":
            raise RateLimited("sim: scripted rate limit", retry_after=1.0)
        pieces = reasoned = 0
        if variant.think or request.reasoning_effort or request.thinking_budget:
            reasoning = sim_agent.compose_reasoning(question)
            for token in sim_text.tokenize(reasoning, seed):
                yield Delta(reasoning=token)
                reasoned += 1
                await pace.next_token()
            yield Delta(signature=sim_agent.signature(reasoning))
        pieces = reasoned
        calls = _planned_calls(request, variant, question)
        if calls:
            # A fault counts the sentence's tokens and the arguments' pieces alike, so one can
            # strike inside a call.
            counted = 0
            async for delta in _call(calls, request, prefill or "", pace):
                counts = bool(delta.text or (delta.tool is not None and delta.tool.arguments))
                if counts and variant.fault and counted == variant.fault_after:
                    await _fail(variant.fault)
                counted += counts
                pieces += 1
                yield delta
            if variant.fault and counted == variant.fault_after:
                await _fail(variant.fault)
            usage = Usage(
                request.estimated_prompt_tokens, pieces, reasoning_tokens=reasoned or None
            )
            yield Delta(finish_reason="tool_calls", usage=usage)
            return
        limit = request.max_tokens or (ENDLESS_CAP if variant.endless else None)
        count = 0
        finish = "stop"
        for token in _answer_tokens(request, question, prefill or "", variant):
            if limit is not None and count >= limit:
                finish = "length"
                break
            if variant.fault and count == variant.fault_after:
                await _fail(variant.fault)
            yield _text(token, request)
            count += 1
            await pace.next_token()
        if variant.fault and count == variant.fault_after:
            await _fail(variant.fault)  # a fault scheduled right at the natural end still fires
        usage = Usage(
            request.estimated_prompt_tokens, count + pieces, reasoning_tokens=reasoned or None
        )
        yield Delta(finish_reason=finish, usage=usage)


def _planned_calls(
    request: GenerationRequest, variant: SimVariant, question: str
) -> list[sim_agent.PlannedCall]:
    """The calls to make now: none once the last turn holds tool results."""
    if not request.tools or (request.messages and request.messages[-1].role == "tool"):
        return []
    forced = request.tool_choice is not None and request.tool_choice.mode in ("required", "tool")
    if not (variant.tools or forced):
        return []
    return sim_agent.plan_calls(
        request.tools, request.tool_choice, request.parallel_tool_calls, question
    )


async def _call(
    calls: list[sim_agent.PlannedCall], request: GenerationRequest, prefill: str, pace: _Pacer
) -> AsyncGenerator[Delta, None]:
    """A sentence (what a continuation's `prefill` has not said of it yet), then each call:
    its id and name, then its arguments in pieces."""
    seed = request.prompt_text
    sentence = sim_agent.before_calls(calls)
    for token in sim_text.tokenize(sentence.removeprefix(prefill), seed):
        yield _text(token, request)
        await pace.next_token()
    for position, call in enumerate(calls):
        yield Delta(tool=ToolDelta(position, call.id, call.name))
        for piece in sim_text.tokenize(call.arguments, seed):
            yield Delta(tool=ToolDelta(position, arguments=piece))
            await pace.next_token()


def _text(token: str, request: GenerationRequest) -> Delta:
    """A token of the answer, scored when `logprobs` asks: the sim always says the same thing,
    so its token's probability is 1 (logprob 0) and each alternative's is nil (-9999.0, the
    floor OpenAI reports)."""
    if not request.logprobs:
        return Delta(token)
    wanted = request.top_logprobs or 0
    others = [other for other in _ALTERNATIVES if other != token][: max(wanted - 1, 0)]
    top = [_logprob(token, 0.0), *(_logprob(other, -9999.0) for other in others)][:wanted]
    return Delta(token, logprobs=[{**_logprob(token, 0.0), "top_logprobs": top}])


# Filler for top_logprobs: 20 common tokens (OpenAI's most), one of which may be the token.
_ALTERNATIVES = (
    *(" the", " a", " and", " of", " to", " in", " is", " it", " that", " for"),
    *(" on", " with", " as", ",", ".", ":", "!", "?", " I", " you", " we"),
)


def _logprob(token: str, value: float) -> dict[str, Any]:
    return {"token": token, "logprob": value, "bytes": list(token.encode())}


def _question_and_prefill(messages: tuple[Message, ...]) -> tuple[str, str | None]:
    """The user's question, and the partial answer to continue (None if not a continuation)."""
    turns = list(messages)
    prefill = None
    if len(turns) >= 2 and turns[-1].role == "user" and turns[-1].text == CONTINUE_PROMPT:
        turns.pop()
    if turns and turns[-1].role == "assistant" and not turns[-1].tool_calls:
        prefill = turns.pop().text
    question = next((m.text for m in reversed(turns) if m.role == "user"), "")
    return question, prefill


def _answer_tokens(
    request: GenerationRequest, question: str, prefill: str, variant: SimVariant
) -> Iterable[str]:
    seed = request.prompt_text
    fmt = request.response_format or {}
    if fmt.get("type") in ("json_object", "json_schema"):
        text = sim_text.compose_json(question, fmt)
    elif variant.endless:
        return _endless_tokens(question, seed)
    elif variant.hostile:
        text = sim_text.HOSTILE_ANSWER
    elif request.messages and request.messages[-1].role == "tool":
        results = _trailing_results(request.messages)
        text = sim_agent.after_results(question, results)
    else:
        last_user = next((m for m in reversed(request.messages) if m.role == "user"), None)
        seen = sim_agent.describe_attachments(last_user) if last_user is not None else ""
        text = seen + sim_text.compose_answer(question)
    if prefill and text.startswith(prefill):
        text = text[len(prefill) :]
    return sim_text.tokenize(text, seed)


def _trailing_results(messages: tuple[Message, ...]) -> list[Message]:
    results: list[Message] = []
    for message in reversed(messages):
        if message.role != "tool":
            break
        results.insert(0, message)
    return results


def _endless_tokens(prompt: str, seed: str) -> Iterator[str]:
    for paragraph in itertools.count():
        yield from sim_text.tokenize(sim_text.compose_endless(prompt, paragraph), seed)


async def _fail(fault: str) -> None:
    if fault == "stall":
        await asyncio.Event().wait()  # never set: only the stream's idle deadline ends this
    if fault == "content_filter":
        raise ContentFiltered("sim: scripted content filter")
    if fault == "reset":
        raise NetworkError("sim: scripted connection reset")
    raise UpstreamError("sim: scripted upstream error")


class _Pacer:
    """Sleeps like a real model: a time to first token, then a jittered delay per token."""

    def __init__(self, timing: SimTiming, seed: str) -> None:
        self._timing = timing
        digest = hashlib.blake2b(seed.encode("utf-8"), digest_size=8).digest()
        self._rng = random.Random(int.from_bytes(digest, "big"))

    def _jittered(self, seconds: float) -> float:
        j = self._timing.jitter
        return seconds * self._rng.uniform(1 - j, 1 + j)

    async def first_token(self) -> None:
        await asyncio.sleep(self._jittered(self._timing.ttft) if self._timing.ttft else 0)

    async def next_token(self) -> None:
        tps = self._timing.tokens_per_second
        # Even with no delay, yield to the loop once per token, as one upstream read would.
        await asyncio.sleep(self._jittered(1 / tps) if tps else 0)
