"""Durations as operators write them ("90s", "15m", "12h", "30d", "2w", or bare seconds).

One parser for every duration the gateway reads: the command line's
`--expires-in`, `--grace` and `--call-timeout`, and the relative bounds of a
usage report (`--since 7d`, the admin API's `since=7d`).
"""

from __future__ import annotations

import math
import re

__all__ = ["DURATION_UNITS", "parse_duration"]

# Seconds in each unit; no unit means seconds.
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*")


def parse_duration(text: str, *, allow_zero: bool = False, unit_required: bool = False) -> float:
    """Seconds in a duration such as "90s", "15m", "12h", "30d", "2w" or "45" (seconds).

    Args:
        text: the duration as written.
        allow_zero: whether "0" is a duration (a grace period may be none;
            a token lifetime may not).
        unit_required: refuse a bare number (where one could be mistaken for
            another thing, as a usage report's year "2026").

    Raises:
        ValueError: the text is not a duration, is zero when that is not
            allowed, or is too large to be one (not finite).
    """
    match = _DURATION.fullmatch(text)
    if match is None or (unit_required and not match.group(2)):
        bare = "" if unit_required else "; a bare number is seconds"
        raise ValueError(f"not a duration: {text!r} (e.g. 90s, 15m, 12h, 30d, 2w{bare})")
    seconds = float(match.group(1)) * DURATION_UNITS[match.group(2) or "s"]
    if not math.isfinite(seconds):
        raise ValueError(f"not a duration: {text!r} is too large")
    if seconds == 0 and not allow_zero:
        raise ValueError(f"not a duration: {text!r} must be more than 0")
    return seconds
