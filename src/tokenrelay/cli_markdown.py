"""Markdown drawn while it streams, for `tokenrelay chat` in a terminal.

An answer is cut into top-level blocks (paragraphs, lists, tables, fenced code) as it arrives.
A block is finished once a blank line and then the start of a block that cannot continue it
have come (not inside a code fence; not an indented line; not the next item of a list). A
finished block is printed once, with rich's `Markdown`, and never drawn again; only the
unfinished tail is redrawn, by rich's `Live`, a few times a second. So a redraw costs what the
last block costs, not what the whole answer costs; inside a long code block, what a screenful
of it costs.

Blocks are spaced as rich spaces a whole document, so the screen ends as the whole answer
rendered at once would look, but for two things: a reference-style link whose definition comes
in a later block shows as text, and bold or inline code left open at the very end is closed.
"""

from __future__ import annotations

import re
import threading
from types import TracebackType

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.markdown import Markdown
from rich.segment import Segment

_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
_LIST_ITEM = re.compile(r"(?:[-+*]|\d{1,9}[.)])(?:[ \t]|$)")
REFRESH_PER_SECOND = 10  # redraws of the tail; each costs the tail's rendering


def _fence_opened(line: str) -> str | None:
    """The fence `line` opens ("```", "~~~~"...), if it opens one."""
    match = _FENCE.match(line)
    if match is None or (match.group(1)[0] == "`" and "`" in match.group(2)):
        return None  # a backtick fence's info string has no backtick: "```a```" is inline code
    return match.group(1)


def _fence_closes(line: str, fence: str) -> bool:
    match = _FENCE.match(line)
    return (
        match is not None
        and match.group(1)[0] == fence[0]
        and len(match.group(1)) >= len(fence)
        and not match.group(2).strip()
    )


_CODE_SPAN = re.compile(r"`[^`]*`")


def closing_inline_markers(line: str) -> str:
    """What closes the inline code or bold that `line` opened and has text in, if any."""
    if _fence_opened(line) is not None:
        return ""
    if line.count("`") % 2:
        return "`" if line.rsplit("`", 1)[1].strip() else ""
    outside_code = _CODE_SPAN.sub("", line)
    if outside_code.count("**") % 2:
        return "**" if outside_code.rsplit("**", 1)[1].strip() else ""
    return ""


class MarkdownBlocks:
    """Streamed markdown, cut into finished top-level blocks and the unfinished tail."""

    def __init__(self) -> None:
        self._lines: list[str] = []  # the complete lines of the unfinished block
        self._partial = ""  # the line under way
        self._fence: str | None = None  # the code fence the tail is inside of
        self._fence_line = 0  # where in `_lines` that fence was opened
        self._is_list = False  # the unfinished block begins with a list item

    @property
    def tail(self) -> str:
        """The text of the unfinished block, as far as it has come."""
        return "\n".join([*self._lines, self._partial])

    def shown(self, max_lines: int | None = None) -> str:
        """The tail as it is drawn. Bold or inline code that the line under way opened is
        closed, so that it shows as bold or code, not as `**` or a backtick, until its own
        end comes (and if it never does, as after Ctrl-C). Inside a code block longer than
        `max_lines`, only its last lines: no more can be on the screen, and highlighting a
        long block whole at each redraw would cost more than the rest of the answer."""
        if self._fence is None:
            closing = closing_inline_markers(self._partial)
            if closing:
                return "\n".join([*self._lines, self._partial.rstrip() + closing])
            return self.tail
        lines = self._lines
        if max_lines is not None and len(lines) - self._fence_line > max_lines:
            lines = [lines[self._fence_line], *lines[-max_lines:]]
        return "\n".join([*lines, self._partial])

    def feed(self, text: str) -> list[str]:
        """Take more of the answer; return the blocks it finished, in order."""
        if "\n" in text:
            *complete, self._partial = (self._partial + text).split("\n")
            finished = [b for line in complete if (b := self._add_line(line)) is not None]
        else:
            self._partial += text
            finished = []
        if self._ended_by_partial_line():
            finished.append(self._take_block())
        return finished

    def _ended_by_partial_line(self) -> bool:
        """The line under way already shows that it begins a new block: the block before it
        need not wait for its end (a list's block does, when it may be a next item)."""
        line = self._partial
        return (
            self._fence is None
            and bool(self._lines)
            and not self._lines[-1].strip()
            and line[:1] not in ("", " ", "\t")
            and not (self._is_list and line[0] in "-+*0123456789")
        )

    def _add_line(self, line: str) -> str | None:
        if self._fence is not None:
            if _fence_closes(line, self._fence):
                self._fence = None
            self._lines.append(line)
            return None
        if not line.strip():
            if self._lines:
                self._lines.append(line)
            return None
        finished = None
        if self._lines and not self._lines[-1].strip() and self._begins_a_block(line):
            finished = self._take_block()
        if not self._lines:
            self._is_list = _LIST_ITEM.match(line) is not None
        self._fence, self._fence_line = _fence_opened(line), len(self._lines)
        self._lines.append(line)
        return finished

    def _begins_a_block(self, line: str) -> bool:
        """After a blank line: `line` cannot belong to the block before it."""
        indented = line[0] in " \t"
        return not indented and not (self._is_list and _LIST_ITEM.match(line))

    def _take_block(self) -> str:
        lines, self._lines = self._lines, []
        while not lines[-1].strip():
            lines.pop()
        return "\n".join(lines)


def _render(
    text: str, spaced: bool, style: str, console: Console, options: ConsoleOptions
) -> list[list[Segment]]:
    """A block's lines, `spaced` from the block above as rich spaces blocks in a whole
    document: a blank line after any block but a horizontal rule, and none doubled, as a list
    or a table brings a blank line of its own even first in a document. Rendered after a
    one-line stand-in paragraph, whose line is then dropped, a block gets that spacing."""
    if not spaced:
        return console.render_lines(_markdown(text, style), options, pad=False)
    return console.render_lines(_markdown(_STAND_IN + text, style), options, pad=False)[1:]


_STAND_IN = "x\n\n"


def _markdown(text: str, style: str) -> Markdown:
    # "default": lines not padded with spaces to the full width (see _Tail on why)
    return Markdown(text, justify="default", style=style)


def _spaces_the_next(block: str) -> bool:
    """Whether rich puts a blank line after `block`: after anything but a horizontal rule."""
    tokens = Markdown(block).parsed
    return not tokens or tokens[-1].type != "hr"


class _Block:
    """A finished block, printed once."""

    def __init__(self, text: str, spaced: bool, style: str) -> None:
        self.text = text
        self.spaced = spaced
        self.style = style

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in _render(self.text, self.spaced, self.style, console, options):
            yield from line
            yield Segment.line()


class _Tail:
    """The unfinished block as `Live` draws it. While it streams, only its last screenful:
    `Live` redraws by moving the cursor up, and cannot reach lines that scrolled away. At the
    end (`whole`), all of it, once."""

    def __init__(self, style: str) -> None:
        self.text = ""
        self.spaced = False
        self.style = style
        self.whole = False
        self._rendered: tuple[tuple[str, bool, int], list[list[Segment]]] | None = None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        key = (self.text, self.spaced, options.max_width)
        if self._rendered is None or self._rendered[0] != key:  # idle redraws cost nothing
            rendered = _render(self.text, self.spaced, self.style, console, options)
            self._rendered = key, rendered
        lines = self._rendered[1]
        if not self.whole:
            lines = lines[-max(1, options.size.height - 1) :]
            # The cursor stays at the end of the last line, where the terminal echoes a
            # Ctrl-C as "^C": on a full line that would wrap to a new line, which `Live`
            # does not know of, and the last redraw would leave a stray line.
            room = options.max_width - 2
            if lines and Segment.get_line_length(lines[-1]) > room:
                lines = [*lines[:-1], Segment.adjust_line_length(lines[-1], room)]
        for number, line in enumerate(lines):
            if number:
                yield Segment.line()
            yield from line


class LiveMarkdown:
    """Markdown shown as it streams to `console`, a terminal, in `style` (rich's, e.g. "dim"
    for reasoning). Use it as a context manager, or call `close` (safe twice): the tail is
    drawn whole and the cursor shown again.

    The tail is redrawn by a thread of this object's own, at most `REFRESH_PER_SECOND` times
    a second and only when it changed, so text that arrives just before a pause shows at
    once. Every write to the terminal (a block printed, a redraw) holds one lock: `Live`
    redraws by moving the cursor up over what it drew last, and two writers at once would
    draw over each other's lines (rich's own refresh thread does not share a lock with
    `console.print`)."""

    def __init__(self, console: Console, style: str = "none") -> None:
        self._console = console
        self._style = style
        self._blocks = MarkdownBlocks()
        self._tail = _Tail(style)
        self._live = Live(
            self._tail,
            console=console,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._lock = threading.Lock()
        self._changed = False
        self._closed = threading.Event()
        self._live.start()
        self._redraws = threading.Thread(target=self._redraw, name="markdown-redraw", daemon=True)
        self._redraws.start()

    def add(self, text: str) -> None:
        finished = self._blocks.feed(text)
        spacing = [self._tail.spaced]
        spacing += [_spaces_the_next(block) for block in finished]
        with self._lock:
            # The tail first: `Live` redraws it under each block printed, and must not draw
            # the block a second time there.
            self._tail.text = self._blocks.shown(max_lines=self._console.height)
            self._tail.spaced = spacing[-1]
            for block, spaced in zip(finished, spacing, strict=False):
                self._console.print(_Block(block, spaced, self._style))
            self._changed = True

    def close(self) -> None:
        self._closed.set()
        self._redraws.join()
        with self._lock:
            self._tail.text, self._tail.whole = self._blocks.shown(), True
            self._live.stop()  # draws the tail a last time, then ends the line

    def _redraw(self) -> None:
        while not self._closed.wait(1 / REFRESH_PER_SECOND):
            with self._lock:
                if self._changed:
                    self._live.refresh()
                    self._changed = False

    def __enter__(self) -> LiveMarkdown:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
