"""Limits and budgets: what a token or a team may use, and how they combine.

A token's effective limits are its own overrides on top of the configured
defaults; a team's limits apply to the sum over its tokens. `None` always
means "no limit".
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Budgets",
    "Limits",
    "TeamPolicy",
    "TokenPolicy",
    "parse_budgets",
    "parse_limits",
    "removed_by",
]


@dataclass(frozen=True)
class Limits:
    """Rate limits; `n` counts toward the image limits, each divided by the model's multiplier."""

    requests_per_minute: int | None = None
    images_per_minute: int | None = None
    images_per_day: int | None = None

    def over(self, defaults: Limits) -> Limits:
        """These limits where set, `defaults` elsewhere."""
        return Limits(**{k: v if v is not None else getattr(defaults, k) for k, v in _items(self)})

    def as_dict(self) -> dict[str, int]:
        """The limits that are set (for JSON columns and the admin API)."""
        return {k: v for k, v in _items(self) if v is not None}


@dataclass(frozen=True)
class Budgets:
    """Spending caps in USD per UTC calendar day and month."""

    per_day_usd: float | None = None
    per_month_usd: float | None = None

    def over(self, defaults: Budgets) -> Budgets:
        """These budgets where set, `defaults` elsewhere."""
        return Budgets(**{k: v if v is not None else getattr(defaults, k) for k, v in _items(self)})

    def as_dict(self) -> dict[str, float]:
        """The budgets that are set."""
        return {k: v for k, v in _items(self) if v is not None}


@dataclass(frozen=True)
class TeamPolicy:
    """A team: its limits and budgets cover the sum over its tokens."""

    id: str
    name: str
    created_at: float
    limits: Limits = field(default_factory=Limits)
    budgets: Budgets = field(default_factory=Budgets)


@dataclass(frozen=True)
class TokenPolicy:
    """What a token may do beyond authenticating: its team, admin scope and overrides."""

    token_id: str
    team_id: str | None = None
    admin: bool = False
    limits: Limits = field(default_factory=Limits)
    budgets: Budgets = field(default_factory=Budgets)


def removed_by(before: TokenPolicy | TeamPolicy, after: TokenPolicy | TeamPolicy) -> list[str]:
    """What replacing `before` with `after` took away, one notice per part.

    Setting a policy replaces all of it; these notices tell a caller who meant
    to change one part (say, a budget) what else went.
    """
    notices = []
    if isinstance(before, TokenPolicy) and isinstance(after, TokenPolicy):
        if before.admin and not after.admin:
            notices.append("admin scope removed (send admin: true to keep it)")
        if before.team_id is not None and after.team_id is None:
            notices.append(f"removed from team {before.team_id}")
    for part in ("limits", "budgets"):
        gone = sorted(set(getattr(before, part).as_dict()) - set(getattr(after, part).as_dict()))
        if gone:
            notices.append(f"{part} removed: {', '.join(gone)}")
    return notices


def _items(value: Any) -> list[tuple[str, Any]]:
    return [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]


def parse_limits(raw: Any, where: str) -> Limits:
    """Limits from a mapping (config YAML or a JSON column); raises ValueError naming `where`."""
    values = _checked(raw, where, Limits, int)
    return Limits(**values)


def parse_budgets(raw: Any, where: str) -> Budgets:
    """Budgets from a mapping; raises ValueError naming `where`."""
    values = _checked(raw, where, Budgets, int | float)
    return Budgets(**{k: float(v) for k, v in values.items()})


def _checked(raw: Any, where: str, kind: type, number: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a mapping")
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    for key, value in raw.items():
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, number) or not 0 <= value < math.inf
        ):  # NaN fails the range test too
            raise ValueError(f"{where}.{key} must be a non-negative, finite number")
    return {k: v for k, v in raw.items() if v is not None}
