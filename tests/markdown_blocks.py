"""Fenced code blocks and links in this project's markdown, for the tests that keep the README
and docs/ honest (tests/test_readme.py, tests/test_docs.py)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FENCE = "```"


@dataclass(frozen=True)
class Block:
    info: str  # what follows the opening fence: "sh", "json", "" …
    body: str
    line: int  # where the opening fence is, counting from 1


def code_blocks(text: str) -> list[Block]:
    """The fenced blocks in order. Fences are the three backticks at the start of a line,
    which is all this project's markdown uses."""
    blocks: list[Block] = []
    opened: tuple[str, int] | None = None
    body: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.startswith(FENCE):
            if opened is not None:
                body.append(line)
            continue
        if opened is None:
            opened, body = (line[len(FENCE) :].strip(), number), []
        else:
            blocks.append(Block(opened[0], "\n".join(body), opened[1]))
            opened = None
    assert opened is None, f"a code block opened on line {opened[1]} is never closed"
    return blocks


def shell_commands(script: str) -> list[str]:
    """The commands of a shell block, each with its continuation lines (a trailing backslash,
    or a quote still open), comments and blank lines left out."""
    commands: list[str] = []
    pending = ""
    for line in script.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending = f"{pending}\n{line}" if pending else line
        if line.endswith("\\"):
            continue
        try:
            shlex.split(pending)
        except ValueError:  # a quote spans lines
            continue
        commands.append(pending)
        pending = ""
    assert not pending, f"an unfinished shell command: {pending!r}"
    return commands


def argv(command: str) -> list[str]:
    """A command's words as the shell reads them (continuation lines joined)."""
    return shlex.split(command.replace("\\\n", " "))


def without_code(text: str) -> str:
    """The prose of a markdown file: fenced blocks and inline code spans blanked out."""
    kept, in_block = [], False
    for line in text.splitlines():
        if line.startswith(FENCE):
            in_block = not in_block
            kept.append("")
            continue
        kept.append("" if in_block else re.sub(r"`[^`]*`", "", line))
    return "\n".join(kept)


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def links(text: str) -> list[str]:
    """The targets of the inline links `[text](target)` in a markdown file's prose."""
    return LINK.findall(without_code(text))


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a file's headings: lower case, punctuation dropped (a code
    span's text kept), spaces as hyphens, and `-1`, `-2` … on repeats."""
    anchors: set[str] = set()
    in_block = False
    for line in text.splitlines():
        if line.startswith(FENCE):
            in_block = not in_block
        match = None if in_block else re.match(r"#{1,6}\s+(.*)", line)
        if match is None:
            continue
        title = match.group(1).strip().lower().replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
        anchor, repeat = slug, 0
        while anchor in anchors:
            repeat += 1
            anchor = f"{slug}-{repeat}"
        anchors.add(anchor)
    return anchors
