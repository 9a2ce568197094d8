"""The quota per owner per operation (CONTRACT 3.3) against real `cbstop serve` processes, on
both databases, counted in process (one worker: exact) and in Redis: exactly the quota is
admitted however many requests arrive together, it returns one unit per interval, every
counted answer says where it stands, a refusal executes nothing, and only API operations
are limited.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.integrations.helpers import assert_error, assert_validation_error, nothing_changes
from tests.ratelimit.helpers import (
    ADMIN_A,
    BAD_KEY,
    LIST,
    ONE,
    ORG_A1,
    READ_ONLY_A1,
    SERVICE_PATHS,
    at_once,
    client,
    counted,
    fields,
    limits,
    new_body,
    rate_limited_total,
    refused,
    unlimited,
)
from tests.reliability.processes import running
from tests.support import query

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("servers")]

BURST = 64


def test_of_64_concurrent_requests_on_a_full_quota_exactly_the_quota_is_admitted(
    world_url: str, store: dict[str, str]
) -> None:
    quota = "10/600"  # one unit back per minute: none returns during the burst
    with running(world_url, env=limits(store, rate=quota)) as server:
        answers = at_once([("GET", server.url + LIST, ORG_A1)] * BURST)

        admitted = [a for a in answers if a.status_code == 200]
        assert len(admitted) == 10, sorted(a.status_code for a in answers)
        # Each admitted answer saw its own place in the quota: r from 9 down to 0, and t the
        # seconds until all ten units are back (60 s each; a few seconds' slack for the run).
        steps = sorted((counted(a, 200, quota) for a in admitted), key=lambda f: f.remaining)
        assert [f.remaining for f in steps] == list(range(10))
        for f in steps:
            assert 60 * (10 - f.remaining) - 5 <= f.reset <= 60 * (10 - f.remaining), f
        for answer in answers:
            if answer.status_code != 200:
                refused(answer, "default", quota)
        assert rate_limited_total(server) == {"default": BURST - 10}

        # HEAD is GET's operation: its quota is spent too.
        with client(server) as session:
            refused(session.head(LIST, headers=ORG_A1), "default", quota)
        assert rate_limited_total(server) == {"default": BURST - 10 + 1}


def test_each_owner_has_a_quota_per_operation_that_its_keys_and_head_share(
    world_url: str, store: dict[str, str]
) -> None:
    quota = "3/600"
    with running(world_url, env=limits(store, rate=quota)) as server, client(server) as session:
        assert [counted(session.get(LIST, headers=ORG_A1), 200, quota).remaining] == [2]
        # Another key of the same owner (org_a1) spends the same quota...
        assert counted(session.get(LIST, headers=READ_ONLY_A1), 200, quota).remaining == 1
        # ...and so does HEAD, GET's operation.
        assert counted(session.head(LIST, headers=ORG_A1), 200, quota).remaining == 0
        refused(session.get(LIST, headers=ORG_A1), "default", quota)
        refused(session.get(LIST, headers=READ_ONLY_A1), "default", quota)
        refused(session.head(LIST, headers=ORG_A1), "default", quota)

        # Another owner, a partner group that sees org_a1: a whole quota of its own.
        assert counted(session.get(LIST, headers=ADMIN_A), 200, quota).remaining == 2
        # Other operations of org_a1: each a whole quota of its own (GET one, POST, PATCH).
        assert counted(session.head(ONE, headers=ORG_A1), 200, quota).remaining == 2
        assert counted(session.get(ONE, headers=ORG_A1), 200, quota).remaining == 1
        created = session.post(LIST, json=new_body("Own quota"), headers=ORG_A1)
        assert counted(created, 201, quota).remaining == 2
        renamed = session.patch(ONE, json={"name": "Renamed"}, headers=ORG_A1)
        assert counted(renamed, 200, quota).remaining == 2
        # Still spent: nothing above returned a unit of org_a1's GET list.
        refused(session.get(LIST, headers=ORG_A1), "default", quota)
        assert rate_limited_total(server) == {"default": 4}


def test_the_fields_count_down_and_a_spent_quota_returns_one_unit_per_interval(
    world_url: str, store: dict[str, str]
) -> None:
    quota = "4/8"  # a unit returns every 2 s
    with running(world_url, env=limits(store, rate=quota)) as server, client(server) as session:
        for n in range(1, 5):
            step = counted(session.get(LIST, headers=ORG_A1), 200, quota)
            # r counts down; t = seconds until r is back to 4 (n units of 2 s, rounded up).
            assert step.remaining == 4 - n, step
            assert step.reset in (2 * n - 1, 2 * n), step
        retry_after = refused(session.get(LIST, headers=ORG_A1), "default", quota)
        assert retry_after in (1, 2)

        # A retry after exactly Retry-After seconds succeeds, and takes the one unit back.
        time.sleep(retry_after)
        assert counted(session.get(LIST, headers=ORG_A1), 200, quota).remaining == 0
        refused(session.get(LIST, headers=ORG_A1), "default", quota)

        # Two and a half intervals later, exactly two units have returned.
        time.sleep(5.0)
        first = counted(session.get(LIST, headers=ORG_A1), 200, quota)
        second = counted(session.get(LIST, headers=ORG_A1), 200, quota)
        assert (first.remaining, second.remaining) == (1, 0)
        assert 6 <= second.reset <= 8, second  # four units owed, half of one already back
        refused(session.get(LIST, headers=ORG_A1), "default", quota)


def test_every_authenticated_answer_counts_and_carries_the_fields_but_a_401_spends_nothing(
    world_url: str, store: dict[str, str]
) -> None:
    quota = "3/600"
    with running(world_url, env=limits(store, rate=quota)) as server, client(server) as session:
        # 401s are not the owner's: any number of them leaves GET list's quota whole.
        for _ in range(5):
            answer = session.get(LIST, headers=BAD_KEY)
            assert_error(answer, 401, "UNAUTHORISED")
            assert fields(answer) is None and "retry-after" not in answer.headers
        assert counted(session.get(LIST, headers=ORG_A1), 200, quota).remaining == 2
        # A 422 on the query counts.
        invalid = session.get(LIST, params={"limit": 0}, headers=ORG_A1)
        assert counted(invalid, 422, quota).remaining == 1
        assert_validation_error(invalid, "limit")
        # A 404 counts.
        missing = session.get("/v1/integrations/int_nope", headers=ORG_A1)
        assert counted(missing, 404, quota).remaining == 2
        assert_error(missing, 404, "NOT_FOUND")

        with nothing_changes(world_url):
            # A 403 counts, and once the quota is spent the refusal is 429, not 403.
            for left in (2, 1, 0):
                denied = session.post(LIST, json=new_body("Read only"), headers=READ_ONLY_A1)
                assert counted(denied, 403, quota).remaining == left
                assert_error(denied, 403, "FORBIDDEN")
            body = new_body("Read only")
            refused(session.post(LIST, json=body, headers=READ_ONLY_A1), "default", quota)
            # A 422 of a PATCH counts.
            empty = session.patch(ONE, json={}, headers=ORG_A1)
            assert counted(empty, 422, quota).remaining == 2
            assert_error(empty, 422, "MISSING_UPDATE_FIELDS")


def _stored_answers(url: str, key: str) -> int:
    rows = query(url, 'SELECT count(*) FROM idempotency_keys WHERE "key" = ?', key)
    return int(rows[0][0])


def _named(url: str, name: str) -> list[str]:
    return [row[0] for row in query(url, "SELECT id FROM integrations WHERE name = ?", name)]


def test_a_refused_request_executes_nothing_and_a_refused_keyed_post_runs_afresh_later(
    world_url: str, store: dict[str, str]
) -> None:
    quota = "2/4"  # a unit returns every 2 s
    key, name = f"refused-{uuid.uuid4().hex}", f"Keyed {uuid.uuid4().hex[:8]}"
    with running(world_url, env=limits(store, rate=quota)) as server, client(server) as session:
        for n in range(2):
            counted(session.post(LIST, json=new_body(f"Spends {n}"), headers=ORG_A1), 201, quota)
        for n in range(2):
            counted(session.patch(ONE, json={"name": f"Spends {n}"}, headers=ORG_A1), 200, quota)

        with nothing_changes(world_url):
            keyed = {**ORG_A1, "Idempotency-Key": key}
            retry_after = refused(
                session.post(LIST, json=new_body(name), headers=keyed), "default", quota
            )
            refused(session.patch(ONE, json={"name": "Never"}, headers=ORG_A1), "default", quota)
        assert _stored_answers(world_url, key) == 0

        # The retry with the same key, once a unit is back, is a first attempt: it writes.
        time.sleep(retry_after)
        again = session.post(LIST, json=new_body(name), headers=keyed)
        assert counted(again, 201, quota).remaining == 0
        assert "idempotent-replayed" not in again.headers
        assert _named(world_url, name) == [again.json()["id"]]
        assert _stored_answers(world_url, key) == 1


def test_service_endpoints_are_never_limited_and_carry_no_fields(
    world_url: str, store: dict[str, str]
) -> None:
    env = limits(store, rate="1/600", auth_failures="1/600")
    with running(world_url, env=env) as server, client(server) as session:
        # This address spends its one failure, then is past its budget...
        assert_error(session.get(LIST, headers=BAD_KEY), 401, "UNAUTHORISED")
        refused(session.get(LIST, headers=ORG_A1), "auth-failures", "1/600")
        # ...and the service endpoints still answer it, with or without a key, every time.
        for path in SERVICE_PATHS:
            for headers in ({}, ORG_A1, BAD_KEY, {}):
                unlimited(session.get(path, headers=headers))
        assert rate_limited_total(server) == {"auth-failures": 1}


def test_with_the_rate_limit_off_nothing_is_refused_and_no_fields_are_sent(
    world_url: str, store: dict[str, str]
) -> None:
    # The failure budget stays on (so a store is in use); the quota is off.
    with running(world_url, env=limits(store, rate="off", auth_failures="20/60")) as server:
        # Three times the default quota of 100, all at once and then one by one.
        answers = at_once([("GET", server.url + LIST, ORG_A1)] * BURST)
        with client(server) as session:
            answers += [session.get(LIST, headers=ORG_A1) for _ in range(300 - BURST)]
        for answer in answers:
            unlimited(answer)
        assert rate_limited_total(server) == {}
