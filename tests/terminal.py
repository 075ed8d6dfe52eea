"""Run the CLI in a pseudo-terminal and read its screen as a person would see it.

The command's output goes through a real pty (so it sees a terminal: `isatty`, a size, Ctrl-C
as a keystroke) into pyte, a VT100 emulator: assertions are about the screen, after every
cursor move and erase, not about the escape codes that drew it.
"""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable

import pyte
from rich.console import Console
from rich.markdown import Markdown


class Terminal:
    """`python -m tokenrelay ARGS` on a terminal of `columns` x `rows` (a tall one, so that
    nothing scrolls off the screen that the tests read)."""

    def __init__(self, *args: str, columns: int = 100, rows: int = 200) -> None:
        self.screen = pyte.Screen(columns, rows)
        self._stream = pyte.ByteStream(self.screen)
        self.output = bytearray()  # every byte written, escape codes and all
        self._master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
        env["TERM"] = "xterm-256color"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tokenrelay", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
            # the pty becomes the child's controlling terminal: Ctrl-C typed there is SIGINT
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)

    def text(self) -> str:
        """The screen's lines, right-trimmed, without the empty ones at the bottom."""
        return "\n".join(line.rstrip() for line in self.screen.display).rstrip("\n")

    def read_until(self, condition: Callable[[], bool], timeout: float = 20.0) -> None:
        """Read output until `condition()` holds; fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if not self._read(deadline - time.monotonic()):
                raise AssertionError(f"timed out or output ended; the screen:\n{self.text()}")

    def wait(self, timeout: float = 20.0) -> int:
        """Read until the command exits (and its output ends); its exit status."""
        deadline = time.monotonic() + timeout
        while self._read(deadline - time.monotonic()):
            pass
        return self.process.wait(timeout=max(0.1, deadline - time.monotonic()))

    def press_ctrl_c(self) -> None:
        os.write(self._master, b"\x03")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self._master)

    def _read(self, timeout: float) -> bool:
        """Feed what comes within `timeout` to the screen; False at its end or the timeout."""
        if timeout <= 0 or not select.select([self._master], [], [], timeout)[0]:
            return False
        try:
            data = os.read(self._master, 65536)
        except OSError:  # EIO: the command exited and the pty closed
            return False
        self.output += data
        self._stream.feed(data)
        return bool(data)


def rendered_at_once(markdown: str, columns: int) -> str:
    """`markdown` as rich renders it whole at `columns` wide, trimmed as `Terminal.text`."""
    console = Console(width=columns, color_system=None)
    with console.capture() as captured:
        console.print(Markdown(markdown))
    return "\n".join(line.rstrip() for line in captured.get().splitlines()).strip("\n")
