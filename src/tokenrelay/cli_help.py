"""How the command line's `--help` reads: no type labels, and the defaults that settings decide."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperOption


def default(text: str) -> str:
    """The end of a help text that names a default typer cannot show: one that the settings
    decide when the option is not given. It reads as typer's own `[default: ...]`."""
    return rf" [dim]\[default: {text}][/]"


def drop_type_labels(command: Any) -> None:
    """typer labels each option in `--help` with its value's type: `<str>`, `<int range>`,
    even `<bool>` on flags and on `--help` itself. The help texts say what a value is, so the
    labels are noise: each option with no metavar of its own gets an empty one, which shows
    nothing (error messages name an option by its flags, never by its metavar). `command` is
    what `typer.main.get_command` gives; its subcommands are done too."""
    help_option = command.get_help_option(typer.Context(command))  # made once, then kept
    for param in [*command.params, help_option]:
        if isinstance(param, TyperOption) and param.metavar is None:
            param.metavar = ""
    for subcommand in getattr(command, "commands", {}).values():
        drop_type_labels(subcommand)
