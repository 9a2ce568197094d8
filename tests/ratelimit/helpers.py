"""What the rate-limit suites share: the stores a server counts in, the keys and bodies of the
matrix world, the IETF fields read back from an answer, and requests sent all at once.

Every test here runs real `cbstop serve` processes (tests/reliability/processes.py) and talks
to them over TCP, from 127.0.0.1 or, where a second client address is needed, from
127.0.0.2 (Linux routes all of 127.0.0.0/8 to the loopback interface; the server listens on
127.0.0.1 and sees the bound source address as the peer's).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from cbstop.world.loader import load_world
from tests.integrations.helpers import assert_error, auth, create_body, world
from tests.observability.helpers import samples
from tests.reliability.processes import Server
from tests.support import TEST_KEY_SECRET, bearer

# The stores a server can count in: "memory" (each process its own) and "redis" (shared).

ORG_A1 = auth("key_org_a1")  # owner organisation:org_a1
READ_ONLY_A1 = auth("key_read_only_a1")  # the same owner, without integrations:write
ADMIN_A = auth("key_admin_a")  # owner partner_group:pgrp_a_admin (sees org_a1 too)
ORG_D = auth("key_org_d")  # owner organisation:org_d
BAD_KEY = bearer("cbs_test_nobody_00000000000000000000000")  # well-formed, unknown

LIST = "/v1/integrations"
ONE = "/v1/integrations/int_a1_orders"  # org_a1's CUSTOM_ORDERS integration
OTHER_ADDRESS = "127.0.0.2"

# Endpoints CONTRACT 3.3 leaves unlimited.
SERVICE_PATHS = ["/healthz", "/readyz", "/metrics", "/v1/openapi.json", "/v1/docs"]

_POLICY = re.compile(r'^"([a-z-]+)";q=(\d+);w=(\d+)$')
_RATELIMIT = re.compile(r'^"([a-z-]+)";r=(\d+);t=(\d+)$')


def limits(
    store: Mapping[str, str], rate: str = "off", auth_failures: str = "off", **more: str
) -> dict[str, str]:
    """A server's environment: these limits, counted in `store`."""
    return {
        **store,
        "CBSTOP_RATE_LIMIT": rate,
        "CBSTOP_AUTH_FAILURE_LIMIT": auth_failures,
        **more,
    }


def load_matrix(database_url: str) -> None:
    """Load the matrix world (tests/worlds/matrix.json) into the database."""
    load_world(database_url, world("matrix"), key_secret=TEST_KEY_SECRET)


def new_body(name: str) -> dict[str, Any]:
    """A valid create body for org_a1, named."""
    return create_body(name=name)


@dataclass(frozen=True)
class Fields:
    """An answer's `RateLimit-Policy` and `RateLimit`, read and checked to agree."""

    policy: str
    quota: int
    window: int
    remaining: int
    reset: int


def fields(response: httpx.Response) -> Fields | None:
    """The answer's rate-limit fields, or None when it has neither (never just one)."""
    policy, state = response.headers.get("ratelimit-policy"), response.headers.get("ratelimit")
    if policy is None and state is None:
        return None
    assert policy is not None and state is not None, dict(response.headers)
    declared, now = _POLICY.match(policy), _RATELIMIT.match(state)
    assert declared and now, (policy, state)
    assert declared.group(1) == now.group(1), (policy, state)
    return Fields(
        declared.group(1),
        int(declared.group(2)),
        int(declared.group(3)),
        int(now.group(2)),
        int(now.group(3)),
    )


def counted(response: httpx.Response, status: int, quota: str) -> Fields:
    """The answer has `status` and the quota's fields (`quota` as `q/w`); the fields."""
    assert response.status_code == status, (response.status_code, response.text)
    got = fields(response)
    q, w = (int(n) for n in quota.split("/"))
    assert got is not None, f"no rate-limit fields on a counted {status}"
    assert (got.policy, got.quota, got.window) == ("default", q, w), got
    assert 0 <= got.remaining < q, got
    assert 1 <= got.reset <= w, got
    return got


def refused(response: httpx.Response, policy: str, limit: str) -> int:
    """The answer is 429 RATE_LIMITED by `policy` (`limit` as `q/w`): `Retry-After` in whole
    seconds, at least 1 and at most one interval (a unit returns every w/q seconds), and the
    policy's fields with nothing remaining. Its Retry-After."""
    q, w = (int(n) for n in limit.split("/"))
    if response.request.method == "HEAD":
        assert response.status_code == 429, response.status_code
    else:
        assert_error(response, 429, "RATE_LIMITED")
    retry_after = response.headers.get("retry-after", "")
    assert retry_after.isdigit(), dict(response.headers)
    assert 1 <= int(retry_after) <= -(-w // q), (retry_after, limit)
    got = fields(response)
    assert got is not None, dict(response.headers)
    assert (got.policy, got.quota, got.window, got.remaining) == (policy, q, w, 0), got
    # Spent: whole again in more than a window less one interval (a second's slack).
    assert w - -(-w // q) - 1 <= got.reset <= w, got
    return int(retry_after)


def failed(response: httpx.Response, budget: str) -> Fields:
    """The answer is 401 UNAUTHORISED with `WWW-Authenticate: Bearer` and the address's
    failure budget (`budget` as `q/w`) after counting it; those fields."""
    assert_error(response, 401, "UNAUTHORISED")
    assert response.headers.get("www-authenticate") == "Bearer"
    assert "retry-after" not in response.headers
    got = fields(response)
    q, w = (int(n) for n in budget.split("/"))
    assert got is not None, dict(response.headers)
    assert (got.policy, got.quota, got.window) == ("auth-failures", q, w), got
    assert 1 <= got.reset <= w, got
    return got


def unlimited(response: httpx.Response, status: int = 200) -> None:
    """The answer has `status` and no rate-limit field nor `Retry-After`."""
    assert response.status_code == status, (response.status_code, response.text)
    assert fields(response) is None, dict(response.headers)
    assert "retry-after" not in response.headers


def client(server: Server, address: str | None = None) -> httpx.Client:
    """A client of `server`, connecting from `address` (default: 127.0.0.1)."""
    transport = httpx.HTTPTransport(local_address=address) if address else None
    return httpx.Client(base_url=server.url, transport=transport, timeout=30)


Call = tuple[str, str, Mapping[str, str]]  # method, absolute URL, headers


def at_once(calls: Sequence[Call], address: str | None = None) -> list[httpx.Response]:
    """Send the calls concurrently, each on its own connection opened beforehand, so they
    reach the servers together; the answers in the calls' order."""

    async def run() -> list[httpx.Response]:
        transport = httpx.AsyncHTTPTransport(
            local_address=address,
            limits=httpx.Limits(max_connections=len(calls), max_keepalive_connections=len(calls)),
        )
        async with httpx.AsyncClient(transport=transport, timeout=60) as session:
            # Open the connections first: a probe per call, all at once, to each call's server.
            await asyncio.gather(*(session.get(_origin(url) + "/healthz") for _, url, _ in calls))
            return await asyncio.gather(
                *(session.request(method, url, headers=dict(h)) for method, url, h in calls)
            )

    return asyncio.run(run())


def _origin(url: str) -> str:
    parts = httpx.URL(url)
    return f"{parts.scheme}://{parts.host}:{parts.port}"


def rate_limited_total(server: Server) -> dict[str, float]:
    """`cbstop_rate_limited_total` on the server's /metrics, by policy: the policies that
    refused anything."""
    with client(server) as session:
        text = session.get("/metrics").text
    return {
        labels["policy"]: value
        for name, labels, value in samples(text)
        if name == "cbstop_rate_limited_total" and value
    }
