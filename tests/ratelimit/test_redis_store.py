"""The Redis store against a real Redis: exact under concurrency, the fields' numbers at each
step, the Lua script equal to `gcra.step`, its keys, and what it does when Redis fails.

Most tests use the machine's Redis with a key prefix of their own; those that kill, pause or
flush Redis start their own `redis-server`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from cbstop.ratelimit import gcra, redis_store
from cbstop.ratelimit.policy import Decision, Limit
from cbstop.ratelimit.redis_store import RedisStore, admission_of, decision_of
from cbstop.ratelimit.stores import Admission, now_us
from cbstop.settings import Settings
from tests.ratelimit.conftest import RedisServer, delete_prefix
from tests.reliability.processes import free_port

SECOND = 1_000_000
KEY = "org_a1|GET /v1/integrations/{id}"
OTHER = "org_a1|PATCH /v1/integrations/{id}"
T = TypeVar("T")


def make_store(
    url: str, prefix: str, quota: Limit | None, auth_failures: Limit | None = None
) -> RedisStore:
    settings = Settings(redis_url=url, redis_prefix=prefix, redis_timeout=0.25)
    return RedisStore(settings, quota, auth_failures)


def with_store(
    url: str,
    prefix: str,
    quota: Limit | None,
    auth_failures: Limit | None,
    scenario: Callable[[RedisStore], Awaitable[T]],
) -> T:
    """Run `scenario` with a started store, closed after."""

    async def main() -> T:
        store = make_store(url, prefix, quota, auth_failures)
        await store.start()
        try:
            return await scenario(store)
        finally:
            await store.close()

    return asyncio.run(main())


def spent(admission: Admission | None) -> Decision:
    assert admission is not None and admission.address is None and admission.quota is not None
    return admission.quota


def as_tuple(decision: Decision) -> tuple[bool, int, int, int]:
    return (decision.allowed, decision.remaining, decision.reset_us, decision.retry_us)


def client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=3, decode_responses=True)


def test_64_concurrent_admits_over_four_connections_admit_exactly_the_quota(
    redis_url: str, redis_prefix: str
) -> None:
    quota = Limit(10, 60)

    async def main() -> list[Admission | None]:
        stores = [make_store(redis_url, redis_prefix, quota) for _ in range(4)]
        try:
            calls = [stores[n % 4].admit("10.0.0.1", KEY) for n in range(64)]
            return await asyncio.gather(*calls)
        finally:
            for store in stores:
                await store.close()

    decisions = [spent(a) for a in asyncio.run(main())]
    allowed = [d for d in decisions if d.allowed]
    refused = [d for d in decisions if not d.allowed]
    assert sorted(d.remaining for d in allowed) == list(range(10))
    assert len(refused) == 54
    assert all(d.remaining == 0 and 0 < d.retry_us <= 6 * SECOND for d in refused)
    with client(redis_url) as r:
        assert r.keys("{" + redis_prefix + "}:*") == ["{" + redis_prefix + "}:q:" + KEY]


def test_the_fields_at_each_step_follow_gcra_on_redis_time(
    redis_url: str, redis_prefix: str
) -> None:
    """5/1: five at once, then one per 200 ms; `now` given, so the numbers are exact."""

    async def scenario(store: RedisStore) -> list[tuple[bool, int, int, int]]:
        base = time.time_ns() // 1000

        async def at(offset: int) -> tuple[bool, int, int, int]:
            reply = await store.run(store.commands.admit(None, KEY, now=str(base + offset)))
            return as_tuple(spent(admission_of(reply)))

        seen = [await at(0) for _ in range(6)]
        seen += [await at(199_999), await at(200_000), await at(200_001)]
        seen += [await at(1_200_000 + n) for n in range(6)]
        return seen

    seen = with_store(redis_url, redis_prefix, Limit(5, 1), None, scenario)
    assert seen == [
        (True, 4, 200_000, 0),
        (True, 3, 400_000, 0),
        (True, 2, 600_000, 0),
        (True, 1, 800_000, 0),
        (True, 0, 1_000_000, 0),
        (False, 0, 1_000_000, 200_000),
        (False, 0, 800_001, 1),  # one microsecond early
        (True, 0, 1_000_000, 0),  # one unit back after one interval
        (False, 0, 999_999, 199_999),
        # A second later the quota is whole again: five more at once.
        (True, 4, 200_000, 0),
        (True, 3, 400_000 - 1, 0),
        (True, 2, 600_000 - 2, 0),
        (True, 1, 800_000 - 3, 0),
        (True, 0, 1_000_000 - 4, 0),
        (False, 0, 1_000_000 - 5, 200_000 - 5),
    ]


def test_a_refused_request_retried_after_retry_after_succeeds_and_the_quota_refills(
    redis_url: str, redis_prefix: str
) -> None:
    """On Redis's own clock: the promised wait is enough, and a full window refills all."""

    async def scenario(store: RedisStore) -> tuple[list[bool], Decision, Decision, list[bool]]:
        burst = [spent(await store.admit(None, KEY)) for _ in range(6)]
        refused = burst[-1]
        await asyncio.sleep(refused.retry_us / SECOND)
        retried = spent(await store.admit(None, KEY))
        await asyncio.sleep(retried.reset_us / SECOND)
        again = [spent(await store.admit(None, KEY)).allowed for _ in range(6)]
        return [d.allowed for d in burst], refused, retried, again

    burst, refused, retried, again = with_store(
        redis_url, redis_prefix, Limit(5, 1), None, scenario
    )
    assert burst == [True] * 5 + [False]
    assert 0 < refused.retry_us <= 200_000 and refused.retry_after == 1
    assert retried.allowed
    assert again == [True] * 5 + [False]


def test_two_quota_keys_are_independent(redis_url: str, redis_prefix: str) -> None:
    async def scenario(store: RedisStore) -> tuple[list[bool], Decision]:
        first = [spent(await store.admit("10.0.0.1", KEY)).allowed for _ in range(4)]
        return first, spent(await store.admit("10.0.0.1", OTHER))

    first, other = with_store(redis_url, redis_prefix, Limit(3, 60), Limit(5, 60), scenario)
    assert first == [True, True, True, False]
    assert as_tuple(other) == (True, 2, 20 * SECOND, 0)


def test_failures_are_counted_per_address_and_block_it_without_io_past_the_budget(
    redis_url: str, redis_prefix: str
) -> None:
    """3/60 failures: three wrong keys pass (to their 401), the address is then blocked in
    this process without a round trip, and a fourth failure is refused."""

    async def scenario(store: RedisStore) -> tuple[list[Decision | None], RedisStore]:
        assert store.blocked("10.0.0.1") is None
        failures = [await store.fail("10.0.0.1")]
        assert store.blocked("10.0.0.1") is None
        failures += [await store.fail("10.0.0.1") for _ in range(2)]
        failures.append(await store.fail("10.0.0.1"))
        return failures, store

    failures, store = with_store(redis_url, redis_prefix, None, Limit(3, 60), scenario)
    # On Redis's clock, a little of which passes between the calls.
    assert [(f.allowed, f.remaining) if f else None for f in failures] == [
        (True, 2),
        (True, 1),
        (True, 0),
        (False, 0),
    ]
    assert [f.reset if f else None for f in failures] == [20, 40, 60, 60]
    assert failures[3] is not None and 19 * SECOND < failures[3].retry_us <= 20 * SECOND
    # The store is closed: `blocked` answers all the same (it never asks Redis).
    blocked = store.blocked("10.0.0.1")
    assert blocked is not None and not blocked.allowed and blocked.remaining == 0
    assert 19 * SECOND < blocked.retry_us <= 20 * SECOND
    assert store.blocked("10.0.0.2") is None


def test_a_blocked_address_spends_no_quota_even_in_a_process_that_never_saw_it_fail(
    redis_url: str, redis_prefix: str
) -> None:
    async def main() -> tuple[Admission | None, Decision | None, Decision, Decision]:
        failing = make_store(redis_url, redis_prefix, Limit(5, 60), Limit(2, 60))
        other = make_store(redis_url, redis_prefix, Limit(5, 60), Limit(2, 60))
        try:
            await failing.fail("10.0.0.1")
            await failing.fail("10.0.0.1")
            refused = await other.admit("10.0.0.1", KEY)
            noted = other.blocked("10.0.0.1")
            elsewhere = spent(await other.admit("10.0.0.2", KEY))
            # An address under its budget is checked and spends nothing of it.
            under = spent(await other.admit("10.0.0.3", KEY))
            return refused, noted, elsewhere, under
        finally:
            await failing.close()
            await other.close()

    refused, noted, elsewhere, under = asyncio.run(main())
    assert refused is not None and refused.quota is None and refused.address is not None
    assert as_tuple(refused.address)[:2] == (False, 0)
    assert 29 * SECOND < refused.address.retry_us <= 30 * SECOND
    assert noted is not None and not noted.allowed
    # The refused request spent nothing: the quota's first unit went to 10.0.0.2.
    assert as_tuple(elsewhere) == (True, 4, 12 * SECOND, 0)
    assert as_tuple(under)[:2] == (True, 3)
    with client(redis_url) as r:
        assert r.exists("{" + redis_prefix + "}:a:10.0.0.3") == 0


def test_limits_that_are_off_cost_no_round_trip(redis_url: str, redis_prefix: str) -> None:
    async def scenario(store: RedisStore) -> tuple[Admission | None, Decision | None]:
        await store.client.connection_pool.disconnect()
        return await store.admit("10.0.0.1", None), await store.fail("10.0.0.1")

    admission, failure = with_store(redis_url, redis_prefix, Limit(5, 60), None, scenario)
    assert admission == Admission()
    assert failure is None


# The model: a dict of TATs and `gcra.step`, as `MemoryStore` uses them.
Step = tuple[int, int, str]  # (delay µs, which address/quota key, mode)


def model(steps: list[Step], base: int, quota: Limit, auth: Limit) -> list[object]:
    tats: dict[str, int] = {}
    now = base
    seen: list[object] = []

    def spend(key: str, limit: Limit) -> Decision:
        decision, tat = gcra.step(tats.get(key, now), now, limit)
        if decision.allowed:
            tats[key] = tat
        return decision

    for delay, which, mode in steps:
        now += delay
        address, quota_key = f"a{which % 2}", f"q{which // 2}"
        if mode == "fail":
            seen.append(spend("a:" + address, auth))
            continue
        if mode == "admit":
            peek, _ = gcra.step(tats.get("a:" + address, now), now, auth, consume=False)
            if not peek.allowed:
                seen.append(Admission(address=peek))
                continue
        seen.append(Admission(quota=spend("q:" + quota_key, quota)))
    return seen


@settings(
    max_examples=60,
    deadline=None,
    # redis_url is the same for every example; each example has its own prefix.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    quota=st.integers(1, 7),
    window=st.integers(2, 9),
    auth=st.integers(1, 4),
    base=st.integers(0, 2**52 - 2**40),
    steps=st.lists(
        st.tuples(
            st.one_of(st.just(0), st.integers(0, 3 * SECOND)),
            st.integers(0, 3),
            st.sampled_from(["admit", "quota-only", "fail"]),
        ),
        min_size=1,
        max_size=40,
    ),
)
def test_the_lua_script_is_gcra_step_line_for_line(
    redis_url: str, quota: int, window: int, auth: int, base: int, steps: list[Step]
) -> None:
    """With `now` given (any time below 2^52 µs, 142 years past 1970), the script's every
    answer equals the Python model's. Intervals of at least 285 ms keep Redis from expiring a
    key before the model would forget it."""
    prefix = "t" + uuid.uuid4().hex
    quota_limit, auth_limit = Limit(quota, window), Limit(auth, window)

    async def scenario(store: RedisStore) -> list[object]:
        seen: list[object] = []
        now = base
        for delay, which, mode in steps:
            now += delay
            address, quota_key = f"a{which % 2}", f"q{which // 2}"
            if mode == "fail":
                command = store.commands.fail(address, now=str(now))
                seen.append(decision_of(await store.run(command)))
            else:
                given_address = address if mode == "admit" else None
                command = store.commands.admit(given_address, quota_key, now=str(now))
                seen.append(admission_of(await store.run(command)))
        return seen

    try:
        seen = with_store(redis_url, prefix, quota_limit, auth_limit, scenario)
    finally:
        delete_prefix(redis_url, prefix)
    assert seen == model(steps, base, quota_limit, auth_limit)


def test_keys_carry_the_hash_tag_hold_the_tat_and_expire_with_it(
    redis_url: str, redis_prefix: str
) -> None:
    async def scenario(store: RedisStore) -> tuple[int, Decision, Decision | None]:
        with client(redis_url) as r:
            before = int(r.time()[0]) * SECOND + int(r.time()[1])
        decision = spent(await store.admit("10.0.0.1", KEY))
        failure = await store.fail("10.0.0.1")
        return before, decision, failure

    before, decision, failure = with_store(
        redis_url, redis_prefix, Limit(5, 1), Limit(3, 1), scenario
    )
    quota_key, address_key = (
        "{" + redis_prefix + "}:q:" + KEY,
        "{" + redis_prefix + "}:a:10.0.0.1",
    )
    with client(redis_url) as r:
        assert sorted(r.keys("{" + redis_prefix + "}:*")) == sorted([quota_key, address_key])
        assert key_slot(quota_key.encode()) == key_slot(address_key.encode())
        value = r.get(quota_key)
        assert value is not None and value.isdigit()  # written whole: never 1.7e+15
        assert before + 200_000 <= int(value) <= before + 200_000 + 5 * SECOND
        assert 0 < r.pttl(quota_key) <= 200 and 0 < r.pttl(address_key) <= 334
        assert decision.reset_us == 200_000 and failure is not None and failure.remaining == 2
        time.sleep(0.4)  # past both TATs: the quotas are whole again, the keys gone
        assert r.keys("{" + redis_prefix + "}:*") == []


def test_a_flushed_script_is_loaded_again_and_the_batch_retried_once(
    private_redis: RedisServer,
) -> None:
    async def scenario(store: RedisStore) -> tuple[list[Decision], str | None]:
        first = [spent(await store.admit(None, KEY)) for _ in range(2)]
        with client(private_redis.url) as r:
            r.script_flush()
            assert r.script_exists(redis_store.SHA) == [False]
        after = await asyncio.gather(*(store.admit(None, KEY) for _ in range(3)))
        return first + [spent(a) for a in after], store.last_error

    seen, error = with_store(private_redis.url, "t", Limit(10, 60), None, scenario)
    # Nothing spent twice, nothing lost: one unit per check, in order.
    assert [d.remaining for d in seen] == [9, 8, 7, 6, 5]
    assert error is None


def test_a_connection_redis_closed_while_idle_is_replaced_before_the_next_batch(
    private_redis: RedisServer,
) -> None:
    """As Redis's idle `timeout` or a proxy would: no batch fails on the dead connection."""

    async def scenario(store: RedisStore) -> tuple[list[Decision], str | None]:
        first = spent(await store.admit(None, KEY))
        with client(private_redis.url) as r:
            assert r.client_kill_filter(_type="normal", skipme=True) == 1
        await asyncio.sleep(0.1)  # the loop sees the end of the stream
        after = [spent(await store.admit(None, KEY)) for _ in range(2)]
        return [first, *after], store.last_error

    seen, error = with_store(private_redis.url, "t", Limit(10, 60), None, scenario)
    assert [d.remaining for d in seen] == [9, 8, 7]
    assert error is None


def test_a_killed_redis_is_skipped_for_a_while_then_limits_return_by_themselves(
    private_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_store, "RETRY_INTERVAL", 3.0)

    async def scenario(store: RedisStore) -> None:
        assert spent(await store.admit(None, KEY)).remaining == 1
        private_redis.kill()
        assert await store.admit(None, KEY) is None
        assert store.last_error is not None
        assert store.last_error.startswith("ConnectionError: ")
        failed_at = time.monotonic()
        private_redis.start()  # empty, on the same port, the script not loaded
        with client(private_redis.url) as r:
            commands = int(r.info("stats")["total_commands_processed"])
            skipped = [await store.admit(None, KEY) for _ in range(20)]
            assert int(r.info("stats")["total_commands_processed"]) == commands + 1
        assert skipped == [None] * 20
        await asyncio.sleep(3.0 - (time.monotonic() - failed_at) + 0.05)
        back = [spent(await store.admit(None, KEY)).allowed for _ in range(3)]
        assert back == [True, True, False]

    with_store(private_redis.url, "t", Limit(2, 60), None, scenario)


def test_a_paused_redis_costs_one_timeout_then_answers_none_at_once(
    private_redis: RedisServer,
) -> None:
    async def scenario(store: RedisStore) -> tuple[float, float, str | None]:
        assert spent(await store.admit(None, KEY)).remaining == 9
        private_redis.pause()
        try:
            started = time.monotonic()
            assert await store.admit(None, KEY) is None
            first = time.monotonic() - started
            started = time.monotonic()
            assert [await store.admit(None, KEY) for _ in range(10)] == [None] * 10
            rest = time.monotonic() - started
            return first, rest, store.last_error
        finally:
            private_redis.resume()

    first, rest, error = with_store(private_redis.url, "t", Limit(10, 60), None, scenario)
    assert 0.2 <= first < 1.0  # redis_timeout is 0.25 s
    assert rest < 0.1
    assert error == "TimeoutError: no answer within 0.25 s"


def test_a_cancelled_caller_does_not_break_its_batch(redis_url: str, redis_prefix: str) -> None:
    async def scenario(
        store: RedisStore,
    ) -> tuple[list[Admission | BaseException | None], Decision]:
        tasks = [asyncio.create_task(store.admit(None, KEY)) for _ in range(16)]
        await asyncio.sleep(0)  # every caller has joined the batch
        tasks[3].cancel()
        await asyncio.sleep(0)  # the batch is on its way
        tasks[7].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return results, spent(await store.admit(None, KEY))

    results, after = with_store(redis_url, redis_prefix, Limit(100, 60), None, scenario)
    assert isinstance(results[3], asyncio.CancelledError)
    assert isinstance(results[7], asyncio.CancelledError)
    answered = [spent(r) for r in results if not isinstance(r, BaseException)]
    assert all(d.allowed for d in answered) and len(answered) == 14
    # The cancelled ones were sent (or not): the store goes on, in order.
    assert 100 - 16 - 1 <= after.remaining <= 100 - 14 - 1


def test_closing_answers_every_waiter_none(private_redis: RedisServer) -> None:
    async def main() -> tuple[list[Admission | None], float]:
        store = make_store(private_redis.url, "t", Limit(10, 60))
        await store.start()
        private_redis.pause()
        try:
            waiters = [asyncio.create_task(store.admit(None, KEY)) for _ in range(5)]
            await asyncio.sleep(0.01)
            started = time.monotonic()
            await store.close()
            closing = time.monotonic() - started
            results = await asyncio.gather(*waiters)
            assert await store.admit(None, KEY) is None  # closed: no more checks
            return results, closing
        finally:
            private_redis.resume()

    results, closing = asyncio.run(main())
    assert results == [None] * 5
    assert closing < 1.5


def test_a_redis_that_is_not_there_does_not_stop_the_start() -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"

    async def scenario(store: RedisStore) -> tuple[Admission | None, Decision | None, str | None]:
        return await store.admit("10.0.0.1", KEY), await store.fail("10.0.0.1"), store.last_error

    admission, failure, error = with_store(url, "t", Limit(5, 60), Limit(5, 60), scenario)
    assert admission is None and failure is None
    assert error is not None
    assert error.startswith(f"ConnectionError: Error 111 connecting to 127.0.0.1:{port}.")


def test_the_blocked_addresses_a_process_remembers_are_bounded(
    redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_store, "REMEMBERED_KEYS", 10)

    async def scenario(store: RedisStore) -> int:
        for n in range(25):
            decision = await store.fail(f"10.0.1.{n}")
            assert decision is not None and decision.remaining == 0
        return len(store._blocked)

    remembered = with_store(redis_url, redis_prefix, None, Limit(1, 3600), scenario)
    assert 0 < remembered <= 10


def test_a_refused_quota_is_refused_again_without_a_round_trip_for_a_quarter_second(
    redis_url: str, redis_prefix: str
) -> None:
    """What the edge asks before a read runs beside its check: a refusal Redis gave a moment
    ago, made again here (never one Redis would not make), then Redis is asked again."""

    async def scenario(store: RedisStore) -> None:
        assert [spent(await store.admit(None, KEY)).allowed for _ in range(3)] == [
            True,
            True,
            False,
        ]
        with client(redis_url) as r:
            commands = int(r.info("stats")["total_commands_processed"])
            known = store.refused(KEY)
            assert known is not None and not known.allowed and known.remaining == 0
            assert 29 * SECOND < known.retry_us <= 30 * SECOND
            assert store.refused(OTHER) is None
            # `info` itself is the one command Redis saw.
            assert int(r.info("stats")["total_commands_processed"]) == commands + 1
        await asyncio.sleep(redis_store.REMEMBER_US / SECOND + 0.05)
        assert store.refused(KEY) is None  # not trusted any longer: Redis decides again
        assert not spent(await store.admit(None, KEY)).allowed
        assert store.refused(KEY) is not None

    with_store(redis_url, redis_prefix, Limit(2, 60), None, scenario)


def test_remembered_refusals_are_dropped_while_redis_does_not_answer(
    private_redis: RedisServer,
) -> None:
    """Redis unreachable: requests are served without limits, remembered refusals too."""

    async def scenario(store: RedisStore) -> None:
        assert [spent(await store.admit(None, KEY)).allowed for _ in range(2)] == [True, False]
        assert store.refused(KEY) is not None
        private_redis.kill()
        assert await store.admit(None, OTHER) is None
        assert store.refused(KEY) is None

    with_store(private_redis.url, "t", Limit(1, 60), None, scenario)


def test_a_remembered_refusal_refuses_on_the_earliest_tat_and_tells_the_latest() -> None:
    """The check's answer came some time after it was asked: refusing on the TAT reckoned
    from the asking never refuses what Redis would admit, and the Retry-After told from the
    TAT reckoned from the answer never sends a client back too soon."""
    store = make_store("redis://127.0.0.1:1/0", "t", Limit(1, 2))  # refused while TAT > now
    now = now_us()
    # Asked 0.5 s before the answer came, which put the TAT 1.9 s after Redis's clock.
    store._refused[KEY] = (now + 1_400_000, now + 1_900_000, now + SECOND)
    told = store.refused(KEY)
    assert told is not None and not told.allowed
    assert 1_890_000 < told.reset_us <= 1_900_000  # told from the latest
    assert (told.retry_after, told.reset) == (2, 2)
    # On the earliest TAT, already past: not refused, whatever the latest says.
    store._refused[KEY] = (now - 600_000, now + 1_900_000, now + SECOND)
    assert store.refused(KEY) is None
