"""Limits and budgets: what a token or a team may use, and how they combine.

A token's effective limits are its own overrides on top of the configured
defaults; a team's limits apply to the sum over its tokens. `None` always
means "no limit".

A policy is replaced whole (`TokenPolicy`, `TeamPolicy`) or changed in parts
(`PolicyPatch`, read from a JSON merge patch by `parse_policy_patch`).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aqueduct_grpc.suggestions import did_you_mean

__all__ = [
    "KEEP",
    "Budgets",
    "Keep",
    "Limits",
    "PatchError",
    "PolicyPatch",
    "TeamPolicy",
    "TokenPolicy",
    "parse_budgets",
    "parse_limits",
    "parse_policy_patch",
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


class Keep(enum.Enum):
    """What a patch leaves as it is (the type of `KEEP`)."""

    KEEP = "keep"


KEEP = Keep.KEEP


@dataclass(frozen=True)
class PolicyPatch:
    """Changes to some parts of a token's or team's policy; every other part stays.

    `limits` and `budgets` hold only the fields that change, each to a value
    or to None (no override: the default for a token, no limit for a team).
    """

    limits: Mapping[str, int | None] = field(default_factory=dict)
    budgets: Mapping[str, float | None] = field(default_factory=dict)
    # A team id or name, None for no team, or KEEP (tokens only).
    team: str | Keep | None = KEEP
    admin: bool | Keep = KEEP  # tokens only

    def limits_over(self, current: Limits) -> Limits:
        """`current` with this patch's limits changed."""
        return dataclasses.replace(current, **self.limits)

    def budgets_over(self, current: Budgets) -> Budgets:
        """`current` with this patch's budgets changed."""
        return dataclasses.replace(current, **self.budgets)


def parse_policy_patch(raw: Any, *, for_token: bool) -> PolicyPatch:
    """A policy patch from a JSON merge patch (RFC 7396), as the admin API's PATCH takes it.

    Keys sent change, keys left out stay, and `null` clears: `{"budgets":
    {"per_day_usd": 5}}` sets one budget and keeps every other part;
    `{"limits": {"images_per_day": null}}` drops one override; `{"limits":
    null}` drops them all; for a token, `{"team": null}` takes it out of its
    team and `{"admin": null}` is `{"admin": false}`.

    Args:
        raw: the decoded JSON object.
        for_token: a token's patch (team, admin, limits, budgets) rather than
            a team's (limits, budgets).

    Raises:
        PatchError: naming the offending field (dotted), with a suggestion
            for a misspelt one.
    """
    if not isinstance(raw, Mapping):
        raise PatchError("", "the policy patch must be a JSON object")
    allowed = ("team", "admin", "limits", "budgets") if for_token else ("limits", "budgets")
    for key in raw:
        if key not in allowed:
            raise PatchError(key, f"unknown field {key!r}{did_you_mean(key, allowed)}")
    team: str | Keep | None = KEEP
    if "team" in raw:
        team = raw["team"]
        if team is not None and (not isinstance(team, str) or not team.strip()):
            raise PatchError("team", "team must be a team id or name, or null (no team)")
    admin: bool | Keep = KEEP
    if "admin" in raw:
        if raw["admin"] is not None and not isinstance(raw["admin"], bool):
            raise PatchError("admin", "admin must be true, false or null (false)")
        admin = raw["admin"] is True  # null removes the scope, as false does
    return PolicyPatch(
        limits=_patched_values(raw.get("limits", {}), "limits", Limits, whole=True),
        budgets=_patched_values(raw.get("budgets", {}), "budgets", Budgets, whole=False),
        team=team,
        admin=admin,
    )


class PatchError(ValueError):
    """A policy patch that cannot be applied; `field` is the dotted path of the fault."""

    def __init__(self, field_path: str, message: str) -> None:
        """Creates the PatchError.

        Args:
            field_path: where in the patch ("budgets.per_day_usd"; "" for the whole).
            message: what is wrong.
        """
        super().__init__(message)
        self.field = field_path


def _patched_values(raw: Any, part: str, kind: type, *, whole: bool) -> dict[str, Any]:
    """The changed fields of a `limits` or `budgets` patch (None: cleared)."""
    names = [f.name for f in dataclasses.fields(kind)]
    if raw is None:  # the whole part cleared
        return dict.fromkeys(names)
    if not isinstance(raw, Mapping):
        raise PatchError(part, f"{part} must be an object (or null to clear them all)")
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"{part}.{key}"
        if key not in names:
            raise PatchError(where, f"unknown field {where!r}{did_you_mean(key, names)}")
        if value is None:
            changes[key] = None
            continue
        number_ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not number_ok or not 0 <= value < _LARGEST_EXACT:  # NaN and infinity fail too
            kind_words = "a whole number" if whole else "a number"
            raise PatchError(where, f"{where} must be {kind_words} of 0 or more, or null")
        if whole and value != int(value):
            raise PatchError(where, f"{where} must be a whole number of 0 or more, or null")
        changes[key] = int(value) if whole else float(value)
    return changes


# Above this a float (JSON numbers and protobuf Struct values are doubles) no
# longer holds every integer, and no limit or budget is meant.
_LARGEST_EXACT = 2.0**53


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
            f"{where}: unknown key {unknown[0]!r}{did_you_mean(str(unknown[0]), known)}"
            f" (known: {', '.join(sorted(known))})"
        )
    for key, value in raw.items():
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, number) or not 0 <= value < math.inf
        ):  # NaN fails the range test too
            raise ValueError(f"{where}.{key} must be a non-negative, finite number")
    return {k: v for k, v in raw.items() if v is not None}
