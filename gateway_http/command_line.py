"""The command-line pieces both commands share: one-line errors, defaults in help, checked types.

Every flag's value is checked when it is parsed, so a mistake is an exit 2
with one line naming the flag, never a default taken silently (a port of
99999 became a random one) or a value that breaks later. `gateway-http`
builds its parser from these, and so can a product's own command that runs
the door beside its core.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, NoReturn

__all__ = ["LOG_LEVELS", "HelpFormatter", "Parser", "checked", "port", "usage_error"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default after its help, unless there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (and exit 2), as a mistake deserves."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Creates the Parser (with `HelpFormatter` unless told otherwise)."""
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Prints `PROG: error: MESSAGE (see PROG --help)` and exits 2."""
        usage_error(self.prog, message)


def usage_error(prog: str, message: str) -> NoReturn:
    """A command line's mistake, found after parsing: one line (as `Parser.error`), exit 2.

    Args:
        prog: the command as typed ("gateway-http", or a subcommand's full name).
        message: what is wrong, naming the flag.
    """
    print(f"{prog}: error: {message} (see {prog} --help)", file=sys.stderr)
    sys.exit(2)


def checked(
    name: str, convert: Callable[[str], Any], accept: Callable[[Any], bool], expected: str
) -> Callable[[str], Any]:
    """An argparse type: `convert`, then `accept`, else one line saying what was expected."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {expected}")
        return value

    parse.__name__ = name
    return parse


port = checked("port", int, lambda v: 0 <= v <= 65535, "a port (0-65535; 0: one the OS picks)")
