"""What `tokenrelay chat` shows of a stream, rendered in a terminal or raw in a pipe.

In a terminal the answer's markdown is drawn as it streams (`cli_markdown`), reasoning dimmed,
a tool call as `→ name {arguments}` on a line of its own. Raw (`--raw`, and always when stdout
is not a terminal) the text goes out exactly as it arrives. When stdout is not a terminal it
holds the answer alone, ended by a newline: reasoning, notes (status, the stats line, errors,
"cancelled") go to stderr, so that `tokenrelay chat ... | cat` gives the answer and nothing else.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from types import TracebackType

from rich.console import Console
from rich.markup import escape

from tokenrelay.cli_markdown import LiveMarkdown
from tokenrelay.client import (
    Cancelled,
    Done,
    Error,
    Reasoning,
    Status,
    StreamEvent,
    Token,
    ToolCall,
)

_REASONING = "dim italic"


class StreamEnded(Exception):
    """The stream ended with an error or cancelled (the note is printed): exit status 1."""


class ChatOutput:
    """Shows a stream's events on `console` (stdout); a context manager, so that a live view
    is closed (its text drawn whole, the cursor back) however the stream ends."""

    def __init__(self, console: Console, raw: bool = False) -> None:
        self._out = console
        piped = not console.is_terminal
        self._notes = Console(stderr=True, highlight=False) if piped else console
        self._rendered = not (raw or piped)
        self._markdown: LiveMarkdown | None = None  # the live view of answer or reasoning
        self._markdown_style = ""
        self._line_open = False  # stdout's last line is unfinished
        self._thinking = False  # reasoning came last: a blank line sets the answer apart

    def show(self, stream: Iterable[StreamEvent]) -> None:
        """Print the stream's events as they come; raise `StreamEnded` for an error or a
        cancel, after its note."""
        for event in stream:
            if self._thinking and not isinstance(event, Reasoning):
                self._end_reasoning()
            self._thinking = isinstance(event, Reasoning)
            if self._answer_piece(event):
                self._out.file.flush()
            elif isinstance(event, Status):
                self.note(f"[dim]{escape(event.message)}[/]")
            elif isinstance(event, Done):
                data = event.data
                self.note(
                    f"[dim]{event.token_count} tokens · {data['tokens_per_second']} tok/s · "
                    f"first token {data.get('ttft_ms')} ms · {event.finish_reason}[/]",
                    apart=self._rendered,
                )
            elif isinstance(event, Error):
                self.note(f"[red]error ({event.error_type}):[/] {escape(event.message)}")
                raise StreamEnded
            elif isinstance(event, Cancelled):
                self.note("[yellow]cancelled[/]")
                raise StreamEnded

    def interrupted(self) -> None:
        """After Ctrl-C, which the terminal echoed as "^C" where the cursor was: a live view's
        last redraw erases it; otherwise the note goes on the line below it."""
        if self._markdown is None and self._notes is self._out:
            self._line_open = True
        self.note("[yellow]cancelled[/]")

    def note(self, markup: str, apart: bool = False) -> None:
        """A line of rich markup about the stream, on a line of its own (after a blank line
        if `apart`); on stderr when stdout is piped."""
        self._close_markdown()
        if self._notes is self._out:
            self._end_line()
            if apart:
                self._out.line()
        self._notes.print(markup)

    def close(self) -> None:
        """End the output: the live view drawn whole, stdout's last line ended."""
        self._close_markdown()
        self._end_line()

    def _answer_piece(self, event: StreamEvent) -> bool:
        """Show text, reasoning or a tool call; False for any other event."""
        if isinstance(event, Token):
            self._text(event.text)
        elif isinstance(event, Reasoning) and self._notes is not self._out:
            sys.stderr.write(event.content)
        elif isinstance(event, Reasoning):
            self._text(event.content, _REASONING)
        elif isinstance(event, ToolCall) and event.phase == "start":
            self._close_markdown()
            self._end_line()
            self._write(f"→ {event.name} ", style="cyan")
        elif isinstance(event, ToolCall) and event.phase == "delta":
            self._write(str(event.arguments), style="cyan")
        elif isinstance(event, ToolCall):
            self._write(f"  ({event.error})" if event.error else "", style="red")
            self._end_line()
        else:
            return False
        return True

    def _text(self, text: str, style: str = "none") -> None:
        if not self._rendered:
            self._write(text, style=style)
            return
        if self._markdown is None or self._markdown_style != style:
            self._close_markdown()
            self._end_line()
            self._markdown, self._markdown_style = LiveMarkdown(self._out, style), style
        self._markdown.add(text)

    def _end_reasoning(self) -> None:
        if self._notes is not self._out:
            sys.stderr.write("\n\n")
        elif self._rendered:
            self._close_markdown()
            self._out.line()
        else:
            self._write("\n\n")

    def _write(self, text: str, style: str | None = None) -> None:
        if text:
            self._out.out(text, style=style, end="")
            self._line_open = not text.endswith("\n")

    def _end_line(self) -> None:
        if self._line_open:
            self._write("\n")

    def _close_markdown(self) -> None:
        if self._markdown is not None:
            self._markdown.close()
            self._markdown = None

    def __enter__(self) -> ChatOutput:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
