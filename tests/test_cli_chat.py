"""What `tokenrelay chat` shows of events that the sim does not send to it (tool calls, an
error after some text), on a terminal emulated by pyte."""

from __future__ import annotations

import contextlib
import io

import pyte
import pytest
from rich.console import Console

from tokenrelay.cli_chat import ChatOutput, StreamEnded
from tokenrelay.client import Done, Error, StreamEvent, Token, ToolCall


def _screen(events: list[StreamEvent]) -> str:
    out = io.StringIO()
    console = Console(
        file=out,
        force_terminal=True,
        force_interactive=True,
        width=60,
        height=30,
        color_system=None,
        highlight=False,
    )
    with ChatOutput(console) as output, contextlib.suppress(StreamEnded):
        output.show(events)
    screen = pyte.Screen(60, 30)
    screen.set_mode(pyte.modes.LNM)  # "\n" as a terminal's output translates it: "\r\n"
    pyte.Stream(screen).feed(out.getvalue())
    return "\n".join(line.rstrip() for line in screen.display).strip("\n")


def test_a_tool_call_shows_on_a_line_of_its_own() -> None:
    events: list[StreamEvent] = [
        Token("1", {}, "Let me **look** that up."),
        ToolCall("2", {}, "start", 0, "call_1", "search"),
        ToolCall("3", {}, "delta", 0, "call_1", "search", '{"q": '),
        ToolCall("4", {}, "delta", 0, "call_1", "search", '"tcp"}'),
        ToolCall("5", {}, "end", 0, "call_1", "search", {"q": "tcp"}),
        Done("6", {"tokens_per_second": 10.0, "ttft_ms": 5}, "tool_calls", 9),
    ]
    assert _screen(events).splitlines() == [
        "Let me look that up.",
        '→ search {"q": "tcp"}',
        "",
        "9 tokens · 10.0 tok/s · first token 5 ms · tool_calls",
    ]


def test_an_error_after_some_text_follows_it_rendered() -> None:
    events: list[StreamEvent] = [
        Token("1", {}, "- one\n- two [not markup]"),
        Error("2", {}, "api_error", "upstream [bold]failed[/bold]"),
    ]
    assert _screen(events).splitlines() == [
        " • one",
        " • two [not markup]",
        "error (api_error): upstream [bold]failed[/bold]",  # the server's text, not markup
    ]


@pytest.mark.parametrize("raw", [True, False])
def test_raw_or_not_the_text_is_all_there(raw: bool) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=60, color_system=None)
    with ChatOutput(console, raw=raw) as output:
        output.show([Token("1", {}, "**a**\n\n`b`")])
    assert ("**a**" in out.getvalue()) is raw
