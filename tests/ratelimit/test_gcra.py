"""The algorithm and the in-process store, without a server: `gcra.step` against a token
bucket computed in exact fractions, the limits' syntax, and the store's three questions."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cbstop.ratelimit import gcra, stores
from cbstop.ratelimit.policy import Decision, Limit, Policy, parse_limit
from cbstop.ratelimit.stores import MemoryStore
from cbstop.settings import Settings

SECOND = 1_000_000


@pytest.mark.parametrize(
    ("text", "limit"),
    [("100/60", Limit(100, 60)), (" 5/1 ", Limit(5, 1)), ("off", None), ("OFF", None)],
)
def test_a_limit_is_requests_per_seconds_or_off(text: str, limit: Limit | None) -> None:
    assert parse_limit(text) == limit


@pytest.mark.parametrize(
    "text", ["", "100", "100/", "/60", "0/60", "5/0", "-1/60", "1.5/60", "5 /60", "1/2/3", "on"]
)
def test_anything_else_is_refused_with_the_expected_form(text: str) -> None:
    with pytest.raises(ValueError, match=r"100/60|at least 1"):
        parse_limit(text)
    with pytest.raises(ValidationError, match="rate_limit"):
        Settings(rate_limit=text)


def test_more_than_one_request_per_microsecond_is_refused() -> None:
    with pytest.raises(ValueError, match="microsecond"):
        parse_limit("2000001/2")


def test_a_window_longer_than_a_year_is_refused() -> None:
    assert parse_limit("1/31622400") == Limit(1, 31_622_400)
    with pytest.raises(ValueError, match="about a year"):
        parse_limit("1/31622401")


def test_the_fields_name_the_policy_and_count_down() -> None:
    policy = Policy("default", Limit(100, 60))
    fields = policy.fields(Decision(True, 99, 600_001))
    assert fields == [
        (b"ratelimit-policy", b'"default";q=100;w=60'),
        (b"ratelimit", b'"default";r=99;t=1'),
    ]


def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one() -> None:
    assert Decision(False, 0, 0, 1).retry_after == 1
    assert Decision(False, 0, 0, SECOND).retry_after == 1
    assert Decision(False, 0, 0, SECOND + 1).retry_after == 2


def test_a_full_quota_is_spent_at_once_then_returns_one_unit_per_interval() -> None:
    limit = Limit(5, 1)  # one unit every 200 ms
    now, tat = 10 * SECOND, 0
    seen = []
    for _ in range(6):
        decision, tat = gcra.step(tat, now, limit)
        seen.append((decision.allowed, decision.remaining, decision.reset_us, decision.retry_us))
    assert seen == [
        (True, 4, 200_000, 0),
        (True, 3, 400_000, 0),
        (True, 2, 600_000, 0),
        (True, 1, 800_000, 0),
        (True, 0, 1_000_000, 0),
        (False, 0, 1_000_000, 200_000),
    ]
    assert gcra.step(tat, now + 199_999, limit)[0].allowed is False
    back, tat = gcra.step(tat, now + 200_000, limit)
    assert (back.allowed, back.remaining, back.reset_us) == (True, 0, 1_000_000)


def test_a_peek_spends_nothing() -> None:
    limit = Limit(2, 1)
    _, tat = gcra.step(0, SECOND, limit)
    decision, same = gcra.step(tat, SECOND, limit, consume=False)
    assert (decision.allowed, decision.remaining, same) == (True, 1, tat)
    _, tat = gcra.step(tat, SECOND, limit)
    refused, same = gcra.step(tat, SECOND, limit, consume=False)
    assert (refused.allowed, refused.retry_us, same) == (False, 500_000, tat)


@settings(max_examples=300, deadline=None)
@given(
    # Up to quotas above the square root of the window in µs, where the interval rounds down
    # by a sizeable share of itself (9999/7: 700.07 µs to 700).
    quota=st.one_of(st.integers(1, 12), st.integers(1000, 20_000)),
    window=st.integers(1, 7),
    delays=st.lists(st.integers(0, 3 * SECOND), min_size=1, max_size=60),
)
def test_gcra_is_a_token_bucket_of_the_whole_quota(
    quota: int, window: int, delays: list[int]
) -> None:
    """Exact fractions: a bucket holding exactly `quota` units, refilled one unit per
    interval, spending one per request."""
    limit = Limit(quota, window)
    interval = limit.interval_us
    capacity = Fraction(quota)
    tokens, tat, now = capacity, 0, 5 * SECOND
    for delay in delays:
        tokens = min(capacity, tokens + Fraction(delay, interval))
        now += delay
        decision, tat = gcra.step(tat, now, limit)
        assert decision.allowed == (tokens >= 1)
        if decision.allowed:
            tokens -= 1
            assert decision.remaining == int(tokens)  # floor
            assert decision.reset_us == (capacity - tokens) * interval
        else:
            assert decision.remaining == 0
            assert decision.retry_us == (1 - tokens) * interval


def test_the_memory_store_spends_refuses_and_forgets_its_owners_separately() -> None:
    async def scenario() -> None:
        store = MemoryStore(Limit(3, 60), Limit(2, 60))
        first = [await store.admit("10.0.0.1", "org|GET /v1/x") for _ in range(4)]
        assert [a.quota.allowed if a and a.quota else None for a in first] == [
            True,
            True,
            True,
            False,
        ]
        other = await store.admit("10.0.0.1", "org|POST /v1/x")
        assert other is not None and other.quota is not None and other.quota.remaining == 2
        assert store.blocked("10.0.0.1") is None
        failures = [await store.fail("10.0.0.1") for _ in range(3)]
        assert [f.allowed if f else None for f in failures] == [True, True, False]
        blocked = store.blocked("10.0.0.1")
        assert blocked is not None and not blocked.allowed and blocked.retry_us > 0
        # A good key from the blocked address: refused, and no quota spent.
        refused = await store.admit("10.0.0.1", "org|POST /v1/x")
        assert refused is not None and refused.quota is None
        assert refused.address is not None and not refused.address.allowed
        after = await store.admit("10.0.0.2", "org|POST /v1/x")
        assert after is not None and after.quota is not None and after.quota.remaining == 1

    asyncio.run(scenario())


def test_the_memory_store_with_limits_off_admits_everything() -> None:
    async def scenario() -> None:
        store = MemoryStore(None, None)
        assert await store.admit("a", "k") == stores.Admission()
        assert await store.fail("a") is None
        assert store.blocked("a") is None

    asyncio.run(scenario())


def test_a_flood_of_keys_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stores, "MEMORY_KEYS", 10)

    async def scenario() -> MemoryStore:
        store = MemoryStore(Limit(1, 3600), None)
        for i in range(25):
            await store.admit(None, f"owner{i}|GET /v1/x")
        return store

    store = asyncio.run(scenario())
    assert len(store._tats) <= 10


@pytest.mark.parametrize(
    "url", ["", "redis://127.0.0.1:6379/0", "rediss://cache/1", "unix:///r.sock"]
)
def test_a_redis_url_is_redis_rediss_or_unix(url: str) -> None:
    assert Settings(redis_url=url).redis_url == url


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("127.0.0.1:6379", "expected redis://"),
        ("http://cache:6379", "expected redis://"),
        ("redis://cache:six/0", "Port could not be cast"),
    ],
)
def test_any_other_redis_url_is_refused_before_anything_starts(url: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        Settings(redis_url=url)
