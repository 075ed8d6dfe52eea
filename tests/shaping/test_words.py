"""Word and line chunking: whole words, no cut characters, exactly the upstream text."""

from __future__ import annotations

import pytest
import regex
from hypothesis import given
from hypothesis import strategies as st

from tokenrelay.shaping.words import Chunker


def _run(chunking: str, tokens: list[str]) -> list[str]:
    chunker = Chunker(chunking)  # type: ignore[arg-type]
    events = [chunker.feed(t) for t in tokens]
    events.append(chunker.flush(final=True))
    return [e for e in events if e]


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        (["Hel", "lo,", " wor", "ld", "!"], ["Hello, ", "world!"]),
        (["Hello ", "world ", "again"], ["Hello ", "world ", "again"]),
        ([" lead", "ing"], [" ", "leading"]),
        (["a\n", "b"], ["a\n", "b"]),
        (["one.", " Two", " three"], ["one. ", "Two ", "three"]),
        (["你好", "。世界", "，再见"], ["你好。", "世界，", "再见"]),
        # A combining mark that arrives with the next token belongs to the space before it.
        (["e ", "\u0301x y"], ["e \u0301x ", "y"]),
        # A family emoji split at its joiners stays one piece.
        (["hi 👨", "\u200d👩", "\u200d👧 ok"], ["hi ", "👨\u200d👩\u200d👧 ", "ok"]),
    ],
)
def test_words(tokens: list[str], expected: list[str]) -> None:
    assert _run("word", tokens) == expected


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        (["| a |", " b |\n| c", " | d |\n"], ["| a | b |\n", "| c | d |\n"]),
        (["def f():\n    ret", "urn 1\n"], ["def f():\n", "    return 1\n"]),
        (["no newline at all"], ["no newline at all"]),
        (["a\r", "\nb"], ["a\r\n", "b"]),
    ],
)
def test_lines(tokens: list[str], expected: list[str]) -> None:
    assert _run("line", tokens) == expected


def test_a_forced_flush_releases_text_without_boundaries() -> None:
    chunker = Chunker("word")
    assert chunker.feed("https://example.com/a/very/long/path") == ""
    assert chunker.flush() == "https://example.com/a/very/long/path"
    assert chunker.held == ""


@pytest.mark.parametrize(
    ("held", "kept"),
    [
        ("family 👨\u200d", "👨\u200d"),  # ends with a joiner: the next emoji belongs to it
        ("flag 🇫", "🇫"),  # half a flag
    ],
)
def test_a_forced_flush_keeps_a_visibly_open_cluster(held: str, kept: str) -> None:
    chunker = Chunker("word")
    assert chunker.feed(held) + chunker.flush() == held.removesuffix(kept)
    assert chunker.held == kept


def _clusters(text: str) -> list[str]:
    return regex.findall(r"\X", text)


@st.composite
def split_text(draw: st.DrawFn) -> tuple[str, list[str]]:
    alphabet = st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from([" ", "\n", "\u0301", "\u200d", "👨", "🇫", "🇷", "。", "e", "é", "\r"]),
    )
    text = draw(st.text(alphabet, max_size=60))
    cuts = sorted(draw(st.sets(st.integers(0, len(text)), max_size=20)))
    tokens = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    return text, tokens


@pytest.mark.parametrize("chunking", ["word", "line"])
@given(case=split_text())
def test_events_join_to_exactly_the_upstream_text_and_never_cut_a_cluster(
    chunking: str, case: tuple[str, list[str]]
) -> None:
    text, tokens = case
    events = _run(chunking, tokens)
    assert "".join(events) == text
    # Every cut between events is a grapheme-cluster boundary of the whole text.
    boundaries = {0}
    for cluster in _clusters(text):
        boundaries.add(max(boundaries) + len(cluster))
    position = 0
    for event in events:
        position += len(event)
        assert position in boundaries


@given(case=split_text())
def test_forced_flushes_still_join_to_exactly_the_upstream_text(
    case: tuple[str, list[str]],
) -> None:
    text, tokens = case
    chunker, out = Chunker("word"), []
    for index, token in enumerate(tokens):
        out.append(chunker.feed(token))
        if index % 2:
            out.append(chunker.flush())
    out.append(chunker.flush(final=True))
    assert "".join(out) == text
