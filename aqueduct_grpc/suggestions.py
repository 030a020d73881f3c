"""A "did you mean" for a misspelt name: config keys, policy fields, model names."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["did_you_mean"]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """The words " (did you mean 'x'?)" for the closest of `choices`, or "" if none is close.

    Args:
        word: the name as written.
        choices: the names it may have meant.
    """
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
