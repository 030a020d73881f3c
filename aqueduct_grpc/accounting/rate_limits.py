"""Rate-limit counters: in memory for one process, or in Redis shared by replicas.

Fixed windows, kept the way `limits`' FixedWindowRateLimiter keeps them (a
counter that expires a minute or a day after the window's first hit): O(1)
per check, and a refusal's Retry-After is exactly when the window ends. The
counters are addressed here rather than through a strategy, whose keys
include the limit's value: changing a limit would have started a fresh
window.

Several counters (token and team, requests and images) are charged together,
all or none, and each is checked and charged in one indivisible step, so the
limits are exact under any concurrency:

- in memory (`limits`' MemoryStorage), the calls are synchronous: testing
  every counter and then charging them runs with no await in between, hence
  atomically on the event loop;
- in Redis, one Lua script tests every counter and charges them only if all
  fit; Redis runs a script alone, so replicas sharing it count exactly, and a
  refused request has charged nothing (nothing to give back).

A Redis that cannot be reached fails closed: the request is refused with
UNAVAILABLE rather than admitted unchecked.
"""

from __future__ import annotations

import importlib.util
import logging
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import grpc
from limits.storage import MemoryStorage

from aqueduct_grpc.errors import GatewayError, quoted

__all__ = ["WEIGHT_SCALE", "Charge", "RateLimiter", "Refusal", "redis_url"]

log = logging.getLogger(__name__)

# Counters hold hundredths, so that a model weighted 0.5 or 1.25 counts exactly.
WEIGHT_SCALE = 100

_WINDOW_SECONDS: dict[str, int] = {
    "requests_per_minute": 60,
    "images_per_minute": 60,
    "images_per_day": 86_400,
}

# Our URL scheme -> redis-py's. `async+` (the `limits` library's spelling,
# once required here) is accepted and means nothing: every Redis call is async.
_REDIS_SCHEMES = {"redis": "redis", "rediss": "rediss", "redis+unix": "unix"}

# Long enough for a loaded Redis, short enough that a vanished one (no RST,
# packets dropped) turns into a quick 503 rather than a hung request.
_REDIS_TIMEOUT_SECONDS = 2.0
# Connections per replica; redis-py's default pool refuses a charge beyond 100.
_REDIS_CONNECTIONS = 50

# KEYS: the counters. ARGV: cost, ceiling and window seconds of each, in order.
# Returns nil when every counter fit and was charged, else {index of the first
# that refused (0-based), its milliseconds to live}.
_ACQUIRE_SCRIPT = """
for i, key in ipairs(KEYS) do
  local count = tonumber(redis.call('GET', key) or '0')
  if count + tonumber(ARGV[3 * i - 2]) > tonumber(ARGV[3 * i - 1]) then
    return {i - 1, redis.call('PTTL', key)}
  end
end
for i, key in ipairs(KEYS) do
  redis.call('INCRBY', key, ARGV[3 * i - 2])
  -- -1: no expiry yet, so this charge opened the window.
  if redis.call('PTTL', key) == -1 then
    redis.call('EXPIRE', key, ARGV[3 * i])
  end
end
return false
"""

_UNREACHABLE = GatewayError(
    grpc.StatusCode.UNAVAILABLE,
    "Rate limits cannot be checked right now (the rate-limit store is unreachable); retry.",
    reason="RATE_LIMITS_UNAVAILABLE",
    retry_after=1.0,
)


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


def redis_url(storage_url: str) -> str | None:
    """The redis-py URL of a `limits.storage` URL, or None for `memory://`.

    Args:
        storage_url: `memory://`, `redis://host:port/db`, `rediss://…`,
            `redis+unix:///path/to.sock?db=0`, each optionally prefixed `async+`.

    Raises:
        ValueError: a one-line reason, for a URL of another kind, with a bad
            port, or naming Redis when the `redis` package is not installed.
    """
    scheme, separator, rest = storage_url.partition("://")
    scheme = scheme.lower().removeprefix("async+")
    if separator and scheme == "memory":
        return None
    if not separator or scheme not in _REDIS_SCHEMES:
        # Only the scheme is quoted: the rest may hold a password.
        got = f"scheme {quoted(scheme, 20)}" if separator else "no scheme"
        raise ValueError(
            f"must be memory://, redis://host:port/db, rediss://… or redis+unix:///path (got {got})"
        )
    url = f"{_REDIS_SCHEMES[scheme]}://{rest}"
    try:
        urllib.parse.urlsplit(url).port  # noqa: B018 (raises on a port that is not one)
    except ValueError:
        raise ValueError("has a port that is not a number from 0 to 65535") from None
    if importlib.util.find_spec("redis") is None:
        raise ValueError("is a Redis URL but redis is not installed: install aqueduct-grpc[redis]")
    return url


class RateLimiter:
    """Charges counters in memory or in Redis, all or none."""

    def __init__(self, storage_url: str = "memory://") -> None:
        """Creates the RateLimiter; nothing is connected until the first charge.

        Args:
            storage_url: `memory://` (this process only), or a Redis URL
                (`redis://`, `rediss://`, `redis+unix://`, also with `async+`)
                so that replicas share the counters.

        Raises:
            ValueError: the URL is not one of those (see `redis_url`).
        """
        url = redis_url(storage_url)
        self._memory = MemoryStorage() if url is None else None
        self._pool: Any = None
        self._redis: Any = None
        self._script: Any = None
        self._redis_error: type[Exception] = Exception
        self._where = "memory"
        self._unreachable = False
        if url is not None:
            # Imported here: redis is an extra, needed only by replicas.
            from redis.asyncio import BlockingConnectionPool, Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
            from redis.exceptions import RedisError

            self._pool = BlockingConnectionPool.from_url(
                url,
                # Beyond the pool's size, charges wait for a connection (at most
                # the timeout) rather than fail: a script takes microseconds.
                max_connections=_REDIS_CONNECTIONS,
                timeout=_REDIS_TIMEOUT_SECONDS,
                socket_timeout=_REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=_REDIS_TIMEOUT_SECONDS,
                # One immediate retry on a fresh connection: enough for pooled
                # connections that a Redis restart broke; more would only delay
                # the 503 while Redis is really down.
                retry=Retry(NoBackoff(), 1),
            )
            self._redis = Redis(connection_pool=self._pool)
            self._script = self._redis.register_script(_ACQUIRE_SCRIPT)
            self._redis_error = RedisError
            self._where = _describe(url)

    async def acquire(self, charges: list[Charge]) -> Refusal | None:
        """Charges every counter, or none and returns the first that refuses.

        Raises:
            GatewayError: UNAVAILABLE when the Redis cannot be reached (fail closed).
        """
        if self._memory is None:
            return await self._acquire_redis(charges)
        # No await from here on: nothing else runs on the event loop meanwhile.
        storage = self._memory
        prepared = [_counter(c) for c in charges]
        for charge, (key, _, cost, ceiling) in zip(charges, prepared, strict=True):
            if storage.get(key) + cost > ceiling:
                return Refusal(charge, max(0.0, storage.get_expiry(key) - time.time()))
        for key, expiry, cost, _ in prepared:
            storage.incr(key, expiry, amount=cost)
        return None

    async def _acquire_redis(self, charges: list[Charge]) -> Refusal | None:
        prepared = [_counter(c) for c in charges]
        keys = [key for key, _, _, _ in prepared]
        args = [n for _, window, cost, ceiling in prepared for n in (cost, ceiling, window)]
        try:
            refused = await self._script(keys=keys, args=args)
        except self._redis_error as error:
            if not self._unreachable:  # one line per outage, not one per request
                self._unreachable = True
                log.error(
                    "rate-limit Redis at %s failed (%s: %s); refusing requests until it answers",
                    self._where,
                    type(error).__name__,
                    error,
                )
            raise _UNREACHABLE from None
        if self._unreachable:
            self._unreachable = False
            log.warning("rate-limit Redis at %s answers again", self._where)
        if refused is None:
            return None
        index, milliseconds = int(refused[0]), int(refused[1])
        # No expiry (-1) or no key (-2) cannot normally refuse; say a whole window.
        seconds = milliseconds / 1000 if milliseconds >= 0 else prepared[index][1]
        return Refusal(charges[index], seconds)

    async def aclose(self) -> None:
        """Closes the Redis connections, if any; the limiter must not be used after."""
        if self._redis is not None:
            await self._redis.aclose()
            await self._pool.aclose()  # a pool given to the client is not closed by it


def _describe(url: str) -> str:
    """Where a Redis URL points, for logs: host:port/db or the socket path, never a password."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"


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
