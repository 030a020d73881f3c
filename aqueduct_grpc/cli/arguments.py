"""What `aqueduct-grpc`'s command line accepts: its checked value types.

The parser, help layout, one-line errors and the port type are the door's
too (`gateway_http.command_line`), re-exported here for the commands.
"""

from __future__ import annotations

import argparse
import enum
from collections.abc import Callable
from typing import Any

from aqueduct_grpc.durations import parse_duration
from gateway_http.command_line import (
    LOG_LEVELS,
    HelpFormatter,
    Parser,
    checked,
    port,
    usage_error,
)

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

count = checked("count", int, lambda v: v >= 0, "a whole number of 0 or more")
positive_count = checked("positive_count", int, lambda v: v >= 1, "a whole number of 1 or more")
log_level = checked(
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


limit = checked("limit", int, lambda v: v >= 0, "a limit (a whole number of 0 or more)")
budget = checked(
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
