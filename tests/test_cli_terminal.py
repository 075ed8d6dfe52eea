"""`tokenrelay chat` on a terminal (a pty, read through a VT100 emulator) against a real
server: markdown rendered as it streams, `--raw` as it came, Ctrl-C mid-answer."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.realserver import RealServer, real_server
from tests.terminal import Terminal, rendered_at_once
from tokenrelay.providers.sim_agent import compose_reasoning
from tokenrelay.providers.sim_text import compose_answer

pytestmark = pytest.mark.server

# The sim answers this with prose, a numbered list with bold, a python code block and a table.
QUESTION = "Write python code to compare TCP handshakes"
COLUMNS = 100
LIST_ITEM = re.compile(r"^(\d)\. \*\*(.+?)\*\*: (.*)$", re.MULTILINE)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    config = "[sim]\nttft = 0.05\ntokens_per_second = 200.0\n"
    with real_server(tmp_path_factory.mktemp("cli-terminal"), config) as running:
        yield running


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    """The terminals a test opens, closed after it."""
    opened: list[Terminal] = []
    yield opened
    for terminal in opened:
        terminal.close()


def _chat(server: RealServer, terminals: list[Terminal], *args: str) -> Terminal:
    terminal = Terminal("chat", *args, "--url", server.url, columns=COLUMNS)
    terminals.append(terminal)
    return terminal


def test_chat_renders_the_markdown_as_it_streams(
    server: RealServer, terminals: list[Terminal]
) -> None:
    terminal = _chat(server, terminals, QUESTION)
    assert terminal.wait() == 0
    answer, stats = terminal.text().rsplit("\n\n", 1)
    assert answer == rendered_at_once(compose_answer(QUESTION), COLUMNS)
    assert "```" not in answer  # the code block is drawn, not fenced
    assert "**" not in answer
    assert "def python_code(items: list[str]) -> list[str]:" in answer
    assert "|---" not in answer
    assert "─" * 20 in answer  # the table's rule
    for number, bold, rest in LIST_ITEM.findall(compose_answer(QUESTION)):
        assert f" {number} {bold}: {rest}" in answer
    assert "tok/s" in stats
    assert "tokens" in stats


def test_bold_is_bold_on_the_screen(server: RealServer, terminals: list[Terminal]) -> None:
    terminal = _chat(server, terminals, QUESTION)
    assert terminal.wait() == 0
    lines = terminal.text().splitlines()
    row = next(n for n, line in enumerate(lines) if line.startswith(" 1 "))
    cells = terminal.screen.buffer[row]
    start = lines[row].index(":") - 1  # the last letter of the bold words before the colon
    assert cells[start].bold
    assert not cells[start + 3].bold  # the plain text after it


def test_raw_prints_the_markdown_as_it_came(server: RealServer, terminals: list[Terminal]) -> None:
    terminal = _chat(server, terminals, QUESTION, "--raw")
    assert terminal.wait() == 0
    screen = terminal.text()
    assert "```python" in screen
    first_item = LIST_ITEM.search(compose_answer(QUESTION))
    assert first_item is not None
    assert first_item.group(0) in screen  # "1. **Bold words**: the rest"
    assert "|---|---|---|" in screen
    assert "tok/s" in screen  # on a terminal, the stats still follow the answer


def test_reasoning_is_italic_and_set_apart(server: RealServer, terminals: list[Terminal]) -> None:
    question = "Explain TCP handshakes"
    terminal = _chat(server, terminals, question, "--model", "sim/fast+think")
    assert terminal.wait() == 0
    reasoning, answer = terminal.text().split("\n\n", 1)
    assert " ".join(reasoning.split()) == compose_reasoning(question)  # wrapped at words
    assert all(cell.italics for cell in terminal.screen.buffer[0].values() if cell.data != " ")
    assert answer.startswith(compose_answer(question).splitlines()[0])


def test_ctrl_c_mid_answer_cancels_and_leaves_what_came_rendered(
    server: RealServer, terminals: list[Terminal]
) -> None:
    terminal = _chat(server, terminals, QUESTION)
    terminal.read_until(lambda: " 1 " in terminal.text())  # the list is being drawn
    terminal.press_ctrl_c()
    assert terminal.wait() == 130
    screen = terminal.text()
    assert screen.splitlines()[-1] == "cancelled"
    assert "it had ended" not in screen  # it was live: Ctrl-C cancelled it
    assert "tok/s" not in screen  # it did not run to its end
    assert "**" not in screen
    # The terminal echoes Ctrl-C as "^C" where the cursor is; the last redraw erased it, and
    # it did not wrap onto a line of its own that left a gap.
    assert "^C" not in screen
    assert "\n\n\n" not in screen
    server.wait_for("stream cancelled", lambda: server.health()["active_streams"] == 0)


def test_ctrl_c_before_the_first_token_says_so_below_the_echo(
    server: RealServer, terminals: list[Terminal]
) -> None:
    terminal = _chat(server, terminals, "x", "--model", "sim/slow-start")
    server.wait_for("stream started", lambda: server.health()["active_streams"] == 1, 15)
    terminal.press_ctrl_c()
    assert terminal.wait() == 130
    assert terminal.text().splitlines()[-1] == "cancelled"  # not "^Ccancelled"
    server.wait_for("stream cancelled", lambda: server.health()["active_streams"] == 0)
