"""Rate-limit counters, kept by the `limits` library (in memory, or Redis for replicas).

Fixed windows (`limits`' FixedWindowRateLimiter): a window starts at the first
counted request and lasts a minute or a day; one counter per window, O(1) per
check, and the refusal's Retry-After is exactly when the window ends.

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

from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerMinute
from limits.aio import strategies as async_strategies
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

__all__ = ["WEIGHT_SCALE", "Charge", "RateLimiter", "Refusal"]

# Counters hold hundredths, so that a model weighted 0.5 or 1.25 counts exactly.
WEIGHT_SCALE = 100

_WINDOWS: dict[str, type[RateLimitItem]] = {
    "requests_per_minute": RateLimitItemPerMinute,
    "images_per_minute": RateLimitItemPerMinute,
    "images_per_day": RateLimitItemPerDay,
}


@dataclass(frozen=True)
class Charge:
    """One counter to charge: `owner`'s (a token or team id) limit `name`."""

    scope: str  # "token" or "team"
    owner: str
    name: str  # a key of _WINDOWS
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
        """Args:
        storage_url: `memory://`, or an async `limits` storage URL such as
            `async+redis://host:6379` so that replicas share the counters.
        """
        self._async = storage_url.startswith("async+")
        self._storage: Any = storage_from_string(storage_url)
        self._strategy: Any = (
            async_strategies.FixedWindowRateLimiter(self._storage)
            if self._async
            else FixedWindowRateLimiter(self._storage)
        )
        self._items: dict[tuple[str, int], RateLimitItem] = {}

    def _item(self, charge: Charge) -> tuple[RateLimitItem, tuple[str, str, str], int]:
        item = self._items.get((charge.name, charge.limit))
        if item is None:
            item = _WINDOWS[charge.name](charge.limit * WEIGHT_SCALE, namespace="aqueduct")
            self._items[(charge.name, charge.limit)] = item
        return item, (charge.scope, charge.owner, charge.name), round(charge.amount * WEIGHT_SCALE)

    async def acquire(self, charges: list[Charge]) -> Refusal | None:
        """Charges every counter, or none and returns the first that refuses."""
        if self._async:
            return await self._acquire_async(charges)
        # No await from here on: nothing else runs on the event loop meanwhile.
        strategy = self._strategy
        prepared = [self._item(c) for c in charges]
        for charge, (item, ids, cost) in zip(charges, prepared, strict=True):
            if not strategy.test(item, *ids, cost=cost):
                return Refusal(charge, self._retry_after(strategy.get_window_stats(item, *ids)))
        for item, ids, cost in prepared:
            strategy.hit(item, *ids, cost=cost)
        return None

    async def _acquire_async(self, charges: list[Charge]) -> Refusal | None:
        strategy = self._strategy
        charged: list[tuple[RateLimitItem, tuple[str, str, str], int]] = []
        for charge in charges:
            item, ids, cost = self._item(charge)
            if not await strategy.hit(item, *ids, cost=cost):
                # A fixed-window hit counts even when it refuses: give it all back.
                for back_item, back_ids, back_cost in [*charged, (item, ids, cost)]:
                    await self._storage.decr(back_item.key_for(*back_ids), back_cost)
                stats = await strategy.get_window_stats(item, *ids)
                return Refusal(charge, self._retry_after(stats))
            charged.append((item, ids, cost))
        return None

    @staticmethod
    def _retry_after(stats: Any) -> float:
        return max(0.0, stats.reset_time - time.time())
