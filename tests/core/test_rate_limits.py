"""RateLimiter on both kinds of `limits` storage: the synchronous in-memory one and an async one.

`async+memory://` runs the code path that `async+redis://` uses (an await per counter), so
the give-back after a partial charge is tested without a Redis server.
"""

from __future__ import annotations

import asyncio

import pytest

from aqueduct_grpc.accounting.rate_limits import Charge, RateLimiter

STORAGES = ["memory://", "async+memory://"]


def charge(name: str, limit: int, amount: float = 1.0, owner: str = "tok_1") -> Charge:
    return Charge("token", owner, name, limit, amount)


@pytest.mark.parametrize("url", STORAGES)
async def test_concurrent_acquires_admit_exactly_the_limit(url):
    limiter = RateLimiter(url)
    results = await asyncio.gather(
        *(limiter.acquire([charge("requests_per_minute", 10)]) for _ in range(50))
    )
    assert sum(r is None for r in results) == 10


@pytest.mark.parametrize("url", STORAGES)
async def test_all_or_nothing(url):
    limiter = RateLimiter(url)
    requests, images = charge("requests_per_minute", 5), charge("images_per_minute", 4, 3)
    assert await limiter.acquire([requests, images]) is None  # images: 3 of 4
    refusal = await limiter.acquire([requests, images])  # 6 > 4: refused
    assert refusal is not None and refusal.charge == images
    assert 0 < refusal.retry_after <= 60
    # The refused request did not use up a request: 4 more fit (5 in all).
    assert [await limiter.acquire([requests]) for _ in range(5)].count(None) == 4


@pytest.mark.parametrize("url", STORAGES)
async def test_fractional_weights_count_exactly(url):
    limiter = RateLimiter(url)
    half = charge("requests_per_minute", 2, 0.5)
    assert [await limiter.acquire([half]) is None for _ in range(5)] == [True] * 4 + [False]


async def test_owners_have_separate_counters():
    limiter = RateLimiter()
    assert await limiter.acquire([charge("images_per_day", 1, owner="a")]) is None
    assert await limiter.acquire([charge("images_per_day", 1, owner="b")]) is None
    refusal = await limiter.acquire([charge("images_per_day", 1, owner="a")])
    assert refusal is not None and 86_000 < refusal.retry_after <= 86_400


@pytest.mark.parametrize("url", ["memory://", "async+memory://"])
async def test_changing_a_limit_keeps_what_was_counted(url):
    limiter = RateLimiter(url)
    assert await limiter.acquire([charge("images_per_day", 5, amount=5)]) is None
    # An admin lowers the limit to 3: the 5 already used still count.
    refusal = await limiter.acquire([charge("images_per_day", 3, amount=1)])
    assert refusal is not None and refusal.retry_after > 0
    # And raising it to 6 leaves room for exactly one more.
    assert await limiter.acquire([charge("images_per_day", 6, amount=1)]) is None
    assert await limiter.acquire([charge("images_per_day", 6, amount=1)]) is not None


async def test_a_tiny_weight_still_counts():
    limiter = RateLimiter()
    for _ in range(100):
        assert await limiter.acquire([charge("requests_per_minute", 1, amount=0.001)]) is None
    assert await limiter.acquire([charge("requests_per_minute", 1, amount=0.001)]) is not None
