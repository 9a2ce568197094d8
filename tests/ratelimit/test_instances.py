"""Three `cbstop serve` instances on one database and one Redis (one key prefix), on both
databases: the quota is shared exactly, whichever instance each request reaches, and so is
every address's budget of failed authentications (CONTRACT 3.3)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ratelimit.helpers import (
    BAD_KEY,
    LIST,
    ORG_A1,
    at_once,
    client,
    counted,
    failed,
    limits,
    load_matrix,
    rate_limited_total,
    refused,
)
from tests.reliability.processes import Server

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("servers")]

QUOTA, BUDGET = "10/600", "3/600"  # nothing returns during a test
BURST = 64


@pytest.fixture
def instances(database_url: str, redis_url: str, redis_prefix: str) -> Iterator[list[Server]]:
    """Two single-worker instances and one with two workers, started together on a database
    holding the matrix world, all counting in one Redis under this test's prefix."""
    load_matrix(database_url)
    env = limits(
        {"CBSTOP_REDIS_URL": redis_url, "CBSTOP_REDIS_PREFIX": redis_prefix},
        rate=QUOTA,
        auth_failures=BUDGET,
    )
    servers = [
        Server(database_url, env=env),
        Server(database_url, env=env),
        Server(database_url, workers=2, env=env),
    ]
    for server in servers:
        server.start()
    try:
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()
            server.cleanup()


def test_three_instances_on_one_redis_admit_exactly_the_quota_between_them(
    instances: list[Server],
) -> None:
    calls = [("GET", instances[n % 3].url + LIST, ORG_A1) for n in range(BURST)]
    answers = at_once(calls)

    admitted = [a for a in answers if a.status_code == 200]
    assert len(admitted) == 10, sorted(a.status_code for a in answers)
    assert sorted(counted(a, 200, QUOTA).remaining for a in admitted) == list(range(10))
    for answer in answers:
        if answer.status_code != 200:
            refused(answer, "default", QUOTA)
    # Every instance refused its share and counted it.
    refusals = [rate_limited_total(server).get("default", 0) for server in instances]
    assert sum(refusals) == BURST - 10
    # Each instance refuses now, from the one quota they share.
    for server in instances:
        with client(server) as session:
            refused(session.get(LIST, headers=ORG_A1), "default", QUOTA)


def test_failed_authentications_on_one_instance_block_the_address_on_the_others(
    instances: list[Server],
) -> None:
    one, two, three = instances
    with client(one) as session:
        for left in (2, 1, 0):
            assert failed(session.get(LIST, headers=BAD_KEY), BUDGET).remaining == left
    # The address has spent its budget on instance one: the others refuse it, a good key too.
    with client(two) as session:
        refused(session.get(LIST, headers=ORG_A1), "auth-failures", BUDGET)
    with client(three) as session:
        refused(session.get(LIST, headers=BAD_KEY), "auth-failures", BUDGET)
        refused(session.get(LIST, headers=ORG_A1), "auth-failures", BUDGET)
