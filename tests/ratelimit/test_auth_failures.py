"""The budget of failed authentications per client address (CONTRACT 3.3) against real
`cbstop serve` processes, on both databases, counted in process and in Redis: past it, every
request from that address is 429 before any key is looked up, other addresses are unaffected,
the address is the forwarded one only from a trusted proxy, and the budget returns.

Two client addresses on one machine: 127.0.0.1 and 127.0.0.2 (see helpers.py).
"""

from __future__ import annotations

import time

import pytest

from tests.ratelimit.helpers import (
    BAD_KEY,
    LIST,
    ORG_A1,
    ORG_D,
    OTHER_ADDRESS,
    at_once,
    client,
    counted,
    failed,
    fields,
    limits,
    rate_limited_total,
    refused,
)
from tests.reliability.processes import running

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("servers")]


def test_the_21st_bad_key_from_an_address_is_refused_before_lookup(
    world_url: str, store: dict[str, str]
) -> None:
    budget, quota = "20/60", "5/600"
    env = limits(store, rate=quota, auth_failures=budget)
    with (
        running(world_url, env=env) as server,
        client(server) as here,
        client(server, OTHER_ADDRESS) as there,
    ):
        # 20 failures, the budget counting down in the 401s' fields.
        for n in range(1, 21):
            assert failed(here.get(LIST, headers=BAD_KEY), budget).remaining == 20 - n
        refused(here.get(LIST, headers=BAD_KEY), "auth-failures", budget)
        # A good key from this address is refused too, before its lookup: its owner's
        # quota is not touched (below) and the refusal names the address's policy.
        refused(here.get(LIST, headers=ORG_A1), "auth-failures", budget)
        refused(here.post(LIST, json={}, headers=ORG_D), "auth-failures", budget)

        # Another address is unaffected: its good key is served from a whole quota...
        assert counted(there.get(LIST, headers=ORG_A1), 200, quota).remaining == 4
        # ...and its bad keys are 401 on a budget of their own.
        assert failed(there.get(LIST, headers=BAD_KEY), budget).remaining == 19
        # A bad key is never refused for a quota, even one its address's good key spent.
        for _ in range(4):
            counted(there.get(LIST, headers=ORG_A1), 200, quota)
        refused(there.get(LIST, headers=ORG_A1), "default", quota)
        assert failed(there.get(LIST, headers=BAD_KEY), budget).remaining == 18
        assert rate_limited_total(server) == {"auth-failures": 3, "default": 1}


def test_behind_a_trusted_proxy_each_forwarded_address_has_its_own_budget(
    world_url: str, store: dict[str, str]
) -> None:
    budget = "3/600"
    # The proxy is 127.0.0.2; 127.0.0.1 is a client that is not trusted to forward.
    env = limits(
        store,
        auth_failures=budget,
        CBSTOP_PROXY_HEADERS="true",
        CBSTOP_FORWARDED_ALLOW_IPS=OTHER_ADDRESS,
    )
    first, second = {"X-Forwarded-For": "203.0.113.1"}, {"X-Forwarded-For": "203.0.113.2"}
    with (
        running(world_url, env=env) as server,
        client(server, OTHER_ADDRESS) as proxy,
        client(server) as untrusted,
    ):
        for left in (2, 1, 0):
            assert failed(proxy.get(LIST, headers={**BAD_KEY, **first}), budget).remaining == left
        refused(proxy.get(LIST, headers={**ORG_A1, **first}), "auth-failures", budget)
        # The proxy's other client is served, and has its whole budget.
        assert proxy.get(LIST, headers={**ORG_A1, **second}).status_code == 200
        assert failed(proxy.get(LIST, headers={**BAD_KEY, **second}), budget).remaining == 2

        # From a peer not trusted to forward, X-Forwarded-For is ignored: a new address in
        # each request changes nothing, the peer's own address spends its budget.
        for n, left in enumerate((2, 1, 0)):
            forged = {"X-Forwarded-For": f"198.51.100.{n}"}
            answer = untrusted.get(LIST, headers={**BAD_KEY, **forged})
            assert failed(answer, budget).remaining == left
        forged = {"X-Forwarded-For": "198.51.100.99"}
        refused(untrusted.get(LIST, headers={**ORG_A1, **forged}), "auth-failures", budget)
        # It did not spend the forwarded addresses' budgets either.
        assert failed(proxy.get(LIST, headers={**BAD_KEY, **second}), budget).remaining == 1
        assert rate_limited_total(server) == {"auth-failures": 2}


def test_an_address_past_its_budget_is_served_again_once_the_budget_returns(
    world_url: str, store: dict[str, str]
) -> None:
    budget = "3/6"  # a failure is forgiven every 2 s
    with running(world_url, env=limits(store, auth_failures=budget)) as server:
        # Of 16 bad keys at once, exactly the budget is looked up and 401; the rest are 429.
        answers = at_once([("GET", server.url + LIST, BAD_KEY)] * 16)
        assert sorted(a.status_code for a in answers) == [401] * 3 + [429] * 13
        assert sorted(failed(a, budget).remaining for a in answers if a.status_code == 401) == [
            0,
            1,
            2,
        ]
        for answer in answers:
            if answer.status_code == 429:
                refused(answer, "auth-failures", budget)

        with client(server) as session:
            retry_after = refused(session.get(LIST, headers=ORG_A1), "auth-failures", budget)
            # After Retry-After seconds one failure is forgiven: the good key is served...
            time.sleep(retry_after)
            served = session.get(LIST, headers=ORG_A1)
            assert served.status_code == 200 and fields(served) is None  # the quota is off
            # ...and one more failure is counted, then the address is refused again.
            assert failed(session.get(LIST, headers=BAD_KEY), budget).remaining == 0
            refused(session.get(LIST, headers=BAD_KEY), "auth-failures", budget)
        assert rate_limited_total(server) == {"auth-failures": 13 + 2}
