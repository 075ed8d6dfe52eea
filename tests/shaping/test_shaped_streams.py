"""Shaping inside a real Stream: the hold timer, json events, done.parsed, invalid_output."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson
import pytest

from tests.shaping.test_jsonstream import grows_into
from tests.streams.test_stream import ScriptedProvider
from tokenrelay.events import Event
from tokenrelay.providers.base import Delta, GenerationRequest, Provider
from tokenrelay.providers.content import Message
from tokenrelay.settings import StreamsSection
from tokenrelay.shaping.shaper import Shaping
from tokenrelay.streams.log import StreamMeta
from tokenrelay.streams.log_memory import MemoryStreamLog
from tokenrelay.streams.log_redis import RedisStreamLog
from tokenrelay.streams.stream import Stream

pytestmark = pytest.mark.anyio


NO_RETRIES = StreamsSection(max_retries=0)


class AppendTimes:
    """Follows the log (a follower, handed each event as it is appended): when each event was
    appended, in loop time."""

    def __init__(self) -> None:
        self.times: dict[int, float] = {}

    def push(self, event: Event) -> bool:
        self.times[event.seq] = asyncio.get_running_loop().time()
        return True

    def interrupt(self) -> None:
        pass


async def _run(
    provider: Provider, shaping: Shaping
) -> tuple[list[dict[str, Any]], AppendTimes, Stream]:
    log = MemoryStreamLog(max_bytes=1 << 20, ttl=60.0)
    await log.create("str_s", StreamMeta("str_s", "m"))
    appended = AppendTimes()
    assert log.attach("str_s", 0, appended)
    request = GenerationRequest("m", (Message("user", "hello"),))
    stream = Stream(
        "str_s", "x/m", provider, request, log, StreamsSection(max_retries=0), shaping=shaping
    )
    await stream.run()
    events = await log.read("str_s", 0, wait=0)
    return [{**orjson.loads(e.data), "_seq": e.seq} for e in events], appended, stream


def _tokens(events: list[dict[str, Any]]) -> list[str]:
    return [e["content"] for e in events if e["type"] == "token"]


async def test_words_are_delivered_whole() -> None:
    script: list[Delta | float | Exception] = [Delta(t) for t in ["Hel", "lo,", " wor", "ld", "!"]]
    events, _, _ = await _run(ScriptedProvider(script), Shaping(chunking="word"))
    assert _tokens(events) == ["Hello, ", "world!"]
    assert events[-1]["type"] == "done"
    assert events[-1]["token_count"] == 5  # upstream tokens, not events
    assert "parsed" not in events[-1]


async def test_text_without_boundaries_still_flows_within_the_hold_limit() -> None:
    script: list[Delta | float | Exception] = [Delta("https://exam"), 0.3, Delta("ple.com ok")]
    events, appended, _ = await _run(
        ScriptedProvider(script), Shaping(chunking="word", max_hold=0.05)
    )
    assert _tokens(events) == ["https://exam", "ple.com ", "ok"]
    start_at = appended.times[1]
    first_token_at = appended.times[2]
    # Released by the hold timer, long before the next token came 0.3 s later.
    assert first_token_at - start_at < 0.3


async def test_held_words_go_out_before_a_cancel() -> None:
    provider = ScriptedProvider([Delta("unfinished wo"), 30.0])
    log = MemoryStreamLog(max_bytes=1 << 20, ttl=60.0)
    await log.create("str_c", StreamMeta("str_c", "m"))
    request = GenerationRequest("m", (Message("user", "hello"),))
    stream = Stream(
        "str_c",
        "x/m",
        provider,
        request,
        log,
        NO_RETRIES,
        shaping=Shaping(chunking="word", max_hold=5),
    )
    task = asyncio.create_task(stream.run())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    events = [orjson.loads(e.data) for e in await log.read("str_c", 0, wait=0)]
    assert [e["type"] for e in events] == ["start", "token", "token", "cancelled"]
    assert "".join(_tokens(events)) == "unfinished wo"


def _json_script(text: str, pause: float) -> list[Delta | float | Exception]:
    steps: list[Delta | float | Exception] = []
    for index in range(0, len(text), 3):
        steps += [Delta(text[index : index + 3]), pause]
    return steps


async def test_json_answers_stream_partials_and_end_with_the_parsed_value() -> None:
    text = '{"name": "Ada Lovelace", "born": 1815, "fields": ["mathematics", "computing"]}'
    shaping = Shaping(json=True, max_hold=0.02)
    events, appended, _ = await _run(ScriptedProvider(_json_script(text, 0.005)), shaping)
    assert "".join(_tokens(events)) == text  # the raw text is delivered too
    partials = [e for e in events if e["type"] == "json"]
    assert len(partials) >= 3
    for earlier, later in itertools.pairwise(partials):
        assert grows_into(earlier["partial"], later["partial"])
        assert grows_into(later["partial"], orjson.loads(text))
        gap = appended.times[later["_seq"]] - appended.times[earlier["_seq"]]
        assert gap >= 0.02 - 1e-3  # at most one json event per max_hold
    assert events[-1]["type"] == "done"
    assert events[-1]["parsed"] == orjson.loads(text)


async def test_a_burst_of_tokens_still_gets_its_latest_partial_after_the_hold() -> None:
    script: list[Delta | float | Exception] = [Delta('{"a": "x'), Delta("y"), Delta("z"), 0.2]
    script += [Delta('"}')]
    events, _, _ = await _run(ScriptedProvider(script), Shaping(json=True, max_hold=0.05))
    partials = [e["partial"] for e in events if e["type"] == "json"]
    assert partials[:2] == [{"a": "x"}, {"a": "xyz"}]  # the second came from the timer
    assert partials[-1] == {"a": "xyz"}


@pytest.mark.parametrize(
    ("text", "schema"),
    [
        ('{"a": 1', None),  # cut short
        ('Sure! {"a": 1}', None),  # prose around the value
        ('{"a": "one"}', {"type": "object", "properties": {"a": {"type": "integer"}}}),
    ],
)
async def test_output_that_is_not_the_requested_json_ends_with_invalid_output(
    text: str, schema: dict[str, Any] | None
) -> None:
    script: list[Delta | float | Exception] = [Delta(text), Delta(finish_reason="stop")]
    events, _, _ = await _run(ScriptedProvider(script), Shaping(json=True, schema=schema))
    assert "".join(_tokens(events)) == text
    assert events[-1]["type"] == "error"
    assert events[-1]["error_type"] == "invalid_output"
    assert events[-1]["retryable"] is True
    assert text not in events[-1]["message"]


async def test_held_words_released_by_the_timer_reach_the_redis_log(redis_url: str) -> None:
    # The hold timer appends from a loop callback (append_nowait): on Redis that queues the
    # event for the stream's flusher, which must keep it in order with the producer's own.
    log = RedisStreamLog(redis_url, max_bytes=1 << 20, ttl=60.0)
    try:
        await log.create("str_r", StreamMeta("str_r", "m"))
        script: list[Delta | float | Exception] = [Delta("長い文"), 0.2, Delta("章です。 ok")]
        request = GenerationRequest("m", (Message("user", "hello"),))
        shaping = Shaping(chunking="word", max_hold=0.05)
        provider = ScriptedProvider(script)
        stream = Stream(
            "str_r", "x/m", provider, request, log, StreamsSection(max_retries=0), shaping=shaping
        )
        await stream.run()
        events = [orjson.loads(e.data) for e in await log.read("str_r", 0, wait=1)]
    finally:
        await log.close()
    assert [e["type"] for e in events] == ["start", "token", "token", "token", "done"]
    assert _tokens(events) == ["長い文", "章です。 ", "ok"]


async def test_regression_steady_text_without_boundaries_is_not_held_past_the_limit() -> None:
    # The hold clock was restarted by every token, so text arriving faster than max_hold but
    # never reaching a boundary (Chinese, a long URL) was held until the stream ended.
    script: list[Delta | float | Exception] = []
    for _ in range(12):
        script += [Delta("字"), 0.02]
    events, appended, _ = await _run(
        ScriptedProvider(script), Shaping(chunking="word", max_hold=0.05)
    )
    tokens = [e for e in events if e["type"] == "token"]
    assert "".join(e["content"] for e in tokens) == "字" * 12
    assert len(tokens) >= 3
    start = appended.times[1]
    assert appended.times[tokens[0]["_seq"]] - start < 0.2  # well before the last token (~0.24 s)
