"""What the command line accepts: a parser whose errors are one line, and checked value types.

Every flag's value is checked when it is parsed, so a mistake is an exit 2
with one line naming the flag, never a default taken silently (a port of
99999 became a random one) or a value that breaks later.
"""

from __future__ import annotations

import argparse
import enum
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from aqueduct_grpc.durations import parse_duration

__all__ = [
    "CLEAR",
    "Clear",
    "HelpFormatter",
    "Parser",
    "budget",
    "clearable",
    "count",
    "duration",
    "limit",
    "log_level",
    "port",
    "positive_count",
    "usage_error",
]

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
        prog: the command as typed ("aqueduct-grpc tokens create").
        message: what is wrong, naming the flag.
    """
    print(f"{prog}: error: {message} (see {prog} --help)", file=sys.stderr)
    sys.exit(2)


def _checked(
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


port = _checked("port", int, lambda v: 0 <= v <= 65535, "a port (0-65535; 0: one the OS picks)")
count = _checked("count", int, lambda v: v >= 0, "a whole number of 0 or more")
positive_count = _checked("positive_count", int, lambda v: v >= 1, "a whole number of 1 or more")
log_level = _checked(
    "log_level", str.upper, lambda v: v in LOG_LEVELS, f"a log level ({', '.join(LOG_LEVELS)})"
)


def duration(*, allow_zero: bool = False) -> Callable[[str], float]:
    """An argparse type for a duration ("90s", "12h", "30d", or seconds), in seconds."""

    def parse(text: str) -> float:
        try:
            return parse_duration(text, allow_zero=allow_zero)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = "duration"
    return parse


class Clear(enum.Enum):
    """A policy flag's "none": drop the override (the type of `CLEAR`)."""

    CLEAR = "none"


CLEAR = Clear.CLEAR


def _finite_number(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(text)
    return value


limit = _checked("limit", int, lambda v: v >= 0, "a limit (a whole number of 0 or more)")
budget = _checked(
    "budget", _finite_number, lambda v: v >= 0, "a budget (a number of USD, 0 or more)"
)


def clearable(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """`kind`, or "none" (CLEAR): for flags that change a policy, where none drops a value."""

    def parse(text: str) -> Any:
        if text.strip().lower() == "none":
            return CLEAR
        try:
            return kind(text)
        except argparse.ArgumentTypeError as error:
            raise argparse.ArgumentTypeError(f"{error}, or none") from None

    parse.__name__ = getattr(kind, "__name__", "value")
    return parse
