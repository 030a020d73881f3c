"""RateLimiter on both storages: in memory, and a real Redis (the session's, flushed per test)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from aqueduct_grpc.accounting.rate_limits import Charge, RateLimiter, redis_url
from aqueduct_grpc.config import ConfigError, parse_config


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    """A RateLimiter in memory, or on the real Redis with no counters yet."""
    url = "memory://"
    if request.param == "redis":
        url = await request.getfixturevalue("redis_server").emptied()
    opened = RateLimiter(url)
    yield opened
    await opened.aclose()


def charge(
    name: str, limit: int, amount: float = 1.0, owner: str = "tok_1", scope: str = "token"
) -> Charge:
    return Charge(scope, owner, name, limit, amount)


async def test_concurrent_acquires_admit_exactly_the_limit(limiter):
    results = await asyncio.gather(
        *(limiter.acquire([charge("requests_per_minute", 10)]) for _ in range(50))
    )
    assert sum(r is None for r in results) == 10
    assert all(r.retry_after > 0 for r in results if r is not None)


async def test_all_or_nothing(limiter):
    requests, images = charge("requests_per_minute", 5), charge("images_per_minute", 4, 3)
    assert await limiter.acquire([requests, images]) is None  # images: 3 of 4
    refusal = await limiter.acquire([requests, images])  # 6 > 4: refused
    assert refusal is not None and refusal.charge == images
    assert 0 < refusal.retry_after <= 60
    # The refused request did not use up a request: 4 more fit (5 in all).
    assert [await limiter.acquire([requests]) for _ in range(5)].count(None) == 4


async def test_a_refusing_team_leaves_the_token_counter_unchanged(limiter):
    token = charge("requests_per_minute", 10, owner="tok_1")
    team = charge("requests_per_minute", 1, owner="team_1", scope="team")
    assert await limiter.acquire([token, team]) is None  # token 1 of 10, team 1 of 1
    for _ in range(5):
        refusal = await limiter.acquire([token, team])
        assert refusal is not None and refusal.charge == team
    # Only the admitted request counted: 9 more fit on the token alone.
    alone = [await limiter.acquire([token]) for _ in range(10)]
    assert alone.count(None) == 9


async def test_fractional_weights_count_exactly(limiter):
    half = charge("requests_per_minute", 2, 0.5)
    assert [await limiter.acquire([half]) is None for _ in range(5)] == [True] * 4 + [False]
    # 1.25 and 0.75 in hundredths: 125 + 75 = 200 fill a limit of 2 exactly.
    heavy, light = charge("images_per_day", 2, 1.25), charge("images_per_day", 2, 0.75)
    assert await limiter.acquire([heavy]) is None
    assert await limiter.acquire([light]) is None
    assert await limiter.acquire([charge("images_per_day", 2, 0.01)]) is not None


async def test_owners_have_separate_counters(limiter):
    assert await limiter.acquire([charge("images_per_day", 1, owner="a")]) is None
    assert await limiter.acquire([charge("images_per_day", 1, owner="b")]) is None
    refusal = await limiter.acquire([charge("images_per_day", 1, owner="a")])
    assert refusal is not None and 86_000 < refusal.retry_after <= 86_400


async def test_changing_a_limit_keeps_what_was_counted(limiter):
    assert await limiter.acquire([charge("images_per_day", 5, amount=5)]) is None
    # An admin lowers the limit to 3: the 5 already used still count.
    refusal = await limiter.acquire([charge("images_per_day", 3, amount=1)])
    assert refusal is not None and refusal.retry_after > 0
    # And raising it to 6 leaves room for exactly one more.
    assert await limiter.acquire([charge("images_per_day", 6, amount=1)]) is None
    assert await limiter.acquire([charge("images_per_day", 6, amount=1)]) is not None


async def test_a_tiny_weight_still_counts(limiter):
    for _ in range(100):
        assert await limiter.acquire([charge("requests_per_minute", 1, amount=0.001)]) is None
    assert await limiter.acquire([charge("requests_per_minute", 1, amount=0.001)]) is not None


async def test_redis_keys_are_the_documented_ones_with_their_window(redis_server):
    url = await redis_server.emptied()
    limiter = RateLimiter(url)
    client = redis.asyncio.Redis.from_url(url)
    try:
        await limiter.acquire([charge("requests_per_minute", 5, 0.5), charge("images_per_day", 9)])
        assert await client.get("aqueduct/token/tok_1/requests_per_minute") == b"50"
        assert 59 <= await client.ttl("aqueduct/token/tok_1/requests_per_minute") <= 60
        assert 86_399 <= await client.ttl("aqueduct/token/tok_1/images_per_day") <= 86_400
        # A later charge does not move the window's end.
        await client.expire("aqueduct/token/tok_1/requests_per_minute", 30)
        await limiter.acquire([charge("requests_per_minute", 5)])
        assert await client.get("aqueduct/token/tok_1/requests_per_minute") == b"150"
        assert await client.ttl("aqueduct/token/tok_1/requests_per_minute") <= 30
    finally:
        await client.aclose()
        await limiter.aclose()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("memory://", None),
        ("async+memory://", None),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("rediss://:secret@redis.example:6380/1", "rediss://:secret@redis.example:6380/1"),
        ("async+redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
        ("redis+unix:///run/redis.sock?db=2", "unix:///run/redis.sock?db=2"),
    ],
)
def test_storage_url_forms(url, expected):
    assert redis_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("memcached://127.0.0.1:11211", "got scheme 'memcached'"),
        ("async+mongodb://user:hunter2@db", "got scheme 'mongodb'"),
        ("127.0.0.1:6379", "got no scheme"),
        ("redis://127.0.0.1:99999/0", "port"),
    ],
)
def test_other_storage_urls_are_a_config_error_naming_the_key(url, message):
    raw = {
        "model_list": [{"model_name": "m", "litellm_params": {"model": "builtin/demo"}}],
        "limits": {"storage": url},
    }
    with pytest.raises(ConfigError, match=message) as caught:
        parse_config(raw, source="t")
    text = str(caught.value)
    assert text.startswith("t: limits.storage ") and "\n" not in text
    assert "hunter2" not in text  # the rest of a URL may hold a password


def test_redis_url_forms_are_accepted_by_the_config():
    for url in ("redis://h:6379/0", "rediss://h", "async+redis://h:6379", "redis+unix:///s"):
        raw = {
            "model_list": [{"model_name": "m", "litellm_params": {"model": "builtin/demo"}}],
            "limits": {"storage": url},
        }
        assert parse_config(raw, source="t").rate_limit_storage == url
