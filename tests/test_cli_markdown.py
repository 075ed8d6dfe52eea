"""Markdown drawn while it streams (`cli_markdown`): blocks cut where they end, and a screen
that ends as the whole answer rendered at once would look, however the text was split."""

from __future__ import annotations

import io
import itertools
import time

import pyte
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from tests.terminal import rendered_at_once
from tokenrelay.cli_markdown import (
    REFRESH_PER_SECOND,
    LiveMarkdown,
    MarkdownBlocks,
    closing_inline_markers,
)
from tokenrelay.providers.sim_text import compose_answer, tokenize

CASES = [
    # (the text so far, the blocks it finished, the tail)
    ("one\n\ntwo", ["one"], "two"),
    ("one\n\n", [], "one\n\n"),  # a blank line alone does not end a block: a list may go on
    ("one\n\n ", [], "one\n\n "),  # nor does an indented line (it may go on with it)
    ("one\ntwo\n\nthree\n\nfour", ["one\ntwo", "three"], "four"),
    ("- a\n- b\n\n- c\n\nafter", ["- a\n- b\n\n- c"], "after"),  # a loose list
    ("- a\n\n1", [], "- a\n\n1"),  # "1." would be its next item, "1 apple" would not
    ("- a\n\n1 apple\n", ["- a"], "1 apple\n"),
    ("1. a\n\n   more of a\n\n2. b", [], "1. a\n\n   more of a\n\n2. b"),
    ("para\n\n    indented code\n\nx", ["para\n\n    indented code"], "x"),
    ("```\na\n\n\nb\n```\n\nafter", ["```\na\n\n\nb\n```"], "after"),  # blank lines
    ("~~~~\n```\n\nstill code\n~~~~\n\nx", ["~~~~\n```\n\nstill code\n~~~~"], "x"),
    ("```a```\n\nx", ["```a```"], "x"),  # inline code, not a fence
    ("| a |\n|---|\n| 1 |\n\ntext", ["| a |\n|---|\n| 1 |"], "text"),
    ("para\n\n- item", ["para"], "- item"),
    ("\n\nleading blank lines", [], "leading blank lines"),
]


@pytest.mark.parametrize(("text", "blocks", "tail"), CASES)
def test_blocks_end_where_markdown_ends_them(text: str, blocks: list[str], tail: str) -> None:
    cutter = MarkdownBlocks()
    assert cutter.feed(text) == blocks
    assert cutter.tail == tail


def test_a_long_answer_keeps_only_its_last_block_to_redraw() -> None:
    """What makes long answers cheap: the tail that each redraw renders is one block."""
    cutter = MarkdownBlocks()
    answer = "\n\n".join(f"Paragraph {n} says something." for n in range(500))
    finished = [block for token in tokenize(answer) for block in cutter.feed(token)]
    assert len(finished) == 499
    assert cutter.tail == "Paragraph 499 says something."


@pytest.mark.parametrize(
    ("line", "closing"),
    [
        ("1. **Start", "**"),
        ("1. **Start ", "**"),  # drawn as "**Start**": a closing ** cannot follow a space
        ("1. **", ""),  # nothing in it yet: "****" would show as stars
        ("**a** and **b", "**"),
        ("**a**", ""),
        ("`code", "`"),
        ("`a **b", "`"),
        ("`a` **b", "**"),
        ("a `x ** y` b", ""),
        ("```pyth", ""),  # a fence being opened, not inline code
        ("plain", ""),
    ],
)
def test_the_line_under_way_shows_its_bold_and_code_closed(line: str, closing: str) -> None:
    assert closing_inline_markers(line) == closing


def test_the_tail_is_shown_closed_but_not_inside_a_code_block() -> None:
    cutter = MarkdownBlocks()
    cutter.feed("1. **Start")
    assert cutter.shown() == "1. **Start**"
    assert cutter.tail == "1. **Start"
    cutter.feed("**\n\n```python\nx = `a")
    assert cutter.shown() == "```python\nx = `a"


def test_a_long_code_block_under_way_is_drawn_from_its_last_lines() -> None:
    """Redraws stay cheap however long the code: no more than a screenful is highlighted."""
    cutter = MarkdownBlocks()
    code = [f"x{n} = {n}" for n in range(1000)]
    cutter.feed("Here:\n```python\n" + "\n".join(code))
    assert cutter.shown(max_lines=20) == "\n".join(["```python", *code[-21:]])
    assert cutter.shown() == cutter.tail  # drawn whole at the end


LINES = [
    "Plain words here.",
    "**bold** and `code` and *em*",
    "- a bullet",
    "* another bullet",
    "1. first",
    "2) second",
    "   continued, indented",
    "    indented four",
    "```python",
    "```",
    "~~~",
    "x = 1",
    "| a | b |",
    "|---|---|",
    "| 1 | 2 |",
    "> a quote",
    "# A heading",
    "## Another",
    "---",
    "***",
    "",
    "",
]
markdownish = st.lists(st.sampled_from(LINES), max_size=30).map("\n".join)


def _chunks(text: str, cuts: list[int]) -> list[str]:
    points = sorted({0, len(text), *(c % (len(text) + 1) for c in cuts)})
    return [text[a:b] for a, b in itertools.pairwise(points)]


@given(markdownish, st.lists(st.integers(min_value=0), max_size=20))
def test_the_blocks_do_not_depend_on_how_the_text_is_split(text: str, cuts: list[int]) -> None:
    whole, split = MarkdownBlocks(), MarkdownBlocks()
    blocks = whole.feed(text)
    assert [b for chunk in _chunks(text, cuts) for b in split.feed(chunk)] == blocks
    assert split.tail == whole.tail


def _screen_after(chunks: list[str], columns: int, rows: int, pause: float = 0.0) -> str:
    """What a terminal shows (scrolled-off lines included) after `LiveMarkdown` took
    `chunks`, with `pause` seconds (a redraw or more) after the first half of them."""
    out = io.StringIO()
    console = Console(
        file=out,
        force_terminal=True,
        force_interactive=True,
        width=columns,
        height=rows,
        color_system=None,
    )
    with LiveMarkdown(console) as view:
        for number, chunk in enumerate(chunks):
            if number == len(chunks) // 2:
                time.sleep(pause)
            view.add(chunk)
    screen = pyte.HistoryScreen(columns, rows, history=10_000)
    screen.set_mode(pyte.modes.LNM)  # "\n" as a terminal's output translates it: "\r\n"
    pyte.Stream(screen).feed(out.getvalue())
    scrolled = ["".join(line[x].data for x in range(columns)) for line in screen.history.top]
    return _trimmed([*scrolled, *screen.display])


def _trimmed(lines: list[str]) -> str:
    return "\n".join(line.rstrip() for line in lines).strip("\n")


@settings(max_examples=60, deadline=None)
@given(markdownish, st.lists(st.integers(min_value=0), max_size=20))
def test_the_screen_ends_as_the_whole_answer_rendered_at_once(text: str, cuts: list[int]) -> None:
    assert _screen_after(_chunks(text, cuts), 60, 200) == rendered_at_once(text, 60)


def test_a_streamed_answer_ends_as_rendered_at_once_after_live_redraws() -> None:
    answer = compose_answer("Write python code to compare TCP handshakes")
    screen = _screen_after(tokenize(answer), 80, 200, pause=3 / REFRESH_PER_SECOND)
    assert screen == rendered_at_once(answer, 80)


def test_a_block_taller_than_the_screen_ends_whole_in_the_scrollback() -> None:
    """While it streams, a code block longer than the screen shows its last screenful (the
    cursor cannot go up past the screen's top to redraw the rest); in the end it is all
    there, each line once."""
    code = [f"x{n} = compute({n})" for n in range(40)]
    text = "Intro.\n\n```python\n" + "\n".join(code) + "\n```\n\nAfter the code."
    screen = _screen_after(tokenize(text), 60, 15, pause=3 / REFRESH_PER_SECOND)
    assert screen == rendered_at_once(text, 60)
    assert [line.strip() for line in screen.splitlines() if "compute" in line] == code


def test_headings_are_drawn_not_marked() -> None:
    text = "# Streaming\n\nSome words.\n\n## Back-pressure\n\nMore words.\n"
    screen = _screen_after(tokenize(text), 60, 40)
    assert "#" not in screen
    assert "Streaming" in screen
    assert "Back-pressure" in screen
    assert screen == rendered_at_once(text, 60)
