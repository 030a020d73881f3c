"""Rate-limit counters, kept by the `limits` library (in memory, or Redis for replicas).

Fixed windows, kept in a `limits` storage the way its FixedWindowRateLimiter
keeps them (a counter that expires a minute or a day after the window's first
hit): O(1) per check, and a refusal's Retry-After is exactly when the window
ends. The counters are addressed here rather than through the strategy,
whose keys include the limit's value: changing a limit would have started a
fresh window.

Several counters (token and team, requests and images) are charged together,
all or none. With the in-memory storage the calls are synchronous, so testing
every counter and then charging them runs with no await in between: atomic on
the event loop, hence exact under any concurrency. With an `async+` storage
(Redis) each charge is atomic on the server; when a race makes a later
counter refuse, the ones already charged are given back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from limits.storage import storage_from_string

__all__ = ["WEIGHT_SCALE", "Charge", "RateLimiter", "Refusal"]

# Counters hold hundredths, so that a model weighted 0.5 or 1.25 counts exactly.
WEIGHT_SCALE = 100

_WINDOW_SECONDS: dict[str, int] = {
    "requests_per_minute": 60,
    "images_per_minute": 60,
    "images_per_day": 86_400,
}


@dataclass(frozen=True)
class Charge:
    """One counter to charge: `owner`'s (a token or team id) limit `name`."""

    scope: str  # "token" or "team"
    owner: str
    name: str  # a key of _WINDOW_SECONDS
    limit: int
    amount: float  # already weighted


@dataclass(frozen=True)
class Refusal:
    """The counter that refused, and when it will have room again."""

    charge: Charge
    retry_after: float


class RateLimiter:
    """Charges counters in a `limits` storage, all or none."""

    def __init__(self, storage_url: str = "memory://") -> None:
        """Creates the RateLimiter.

        Args:
            storage_url: `memory://`, or an async `limits` storage URL such as
                `async+redis://host:6379` so that replicas share the counters.
        """
        self._async = storage_url.startswith("async+")
        self._storage: Any = storage_from_string(storage_url)

    async def acquire(self, charges: list[Charge]) -> Refusal | None:
        """Charges every counter, or none and returns the first that refuses."""
        if self._async:
            return await self._acquire_async(charges)
        # No await from here on: nothing else runs on the event loop meanwhile.
        storage = self._storage
        prepared = [_counter(c) for c in charges]
        for charge, (key, _, cost, ceiling) in zip(charges, prepared, strict=True):
            if storage.get(key) + cost > ceiling:
                return Refusal(charge, self._retry_after(storage.get_expiry(key)))
        for key, expiry, cost, _ in prepared:
            storage.incr(key, expiry, amount=cost)
        return None

    async def _acquire_async(self, charges: list[Charge]) -> Refusal | None:
        storage = self._storage
        charged: list[tuple[str, int]] = []
        for charge in charges:
            key, expiry, cost, ceiling = _counter(charge)
            count = await storage.incr(key, expiry, amount=cost)
            charged.append((key, cost))
            if count > ceiling:
                # Over: give back everything this request charged.
                for back_key, back_cost in charged:
                    await storage.decr(back_key, back_cost)
                return Refusal(charge, self._retry_after(await storage.get_expiry(key)))
        return None

    @staticmethod
    def _retry_after(reset_time: float) -> float:
        return max(0.0, reset_time - time.time())


def _counter(charge: Charge) -> tuple[str, int, int, int]:
    """(key, window seconds, cost, ceiling) of a charge, all in hundredths.

    The key names the owner and the limit but not its value, so changing a
    limit keeps what was already counted in the current window.
    """
    key = f"aqueduct/{charge.scope}/{charge.owner}/{charge.name}"
    cost = round(charge.amount * WEIGHT_SCALE)
    if charge.amount > 0:
        cost = max(cost, 1)  # a tiny weight still counts, never free
    return key, _WINDOW_SECONDS[charge.name], cost, charge.limit * WEIGHT_SCALE
