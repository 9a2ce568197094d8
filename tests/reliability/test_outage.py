"""A database outage: the service answers fast (success or 503 with Retry-After), reports
not ready, recovers by itself when PostgreSQL is back, and loses no acknowledged write."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from cbstop.world.loader import load_world
from tests.integrations.helpers import secret, world
from tests.reliability.processes import Cluster, Server, cluster, running
from tests.reliability.traffic import Outcome, Traffic
from tests.support import TEST_KEY_SECRET

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("servers")]

ANSWER_WITHIN = 2.0  # seconds: no request may take longer, outage or not
OUTAGE = 2.5  # seconds the database stays down
RECOVERY = 15.0  # seconds the service may take to notice the database is back


@dataclass
class Stack:
    cluster: Cluster
    server: Server
    key: str
    admin_key: str


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """A throwaway cluster, a `cbstop serve` on it, and the matrix world loaded."""
    matrix = world("matrix")
    with cluster() as pg:
        url = pg.create_database("cbstop")
        with running(url) as server:
            load_world(url, matrix, key_secret=TEST_KEY_SECRET)
            yield Stack(pg, server, secret(matrix, "key_org_a1"), secret(matrix, "key_admin_a"))


def _wait_for_readyz(client: httpx.Client, status: int, timeout: float) -> float:
    """Seconds until `/readyz` answers `status` (AssertionError past `timeout`)."""
    started = time.monotonic()
    seen: list[object] = []
    while time.monotonic() - started < timeout:
        try:
            answer = client.get("/readyz")
            seen.append(answer.status_code)
            if answer.status_code == status:
                if status == 503:
                    assert answer.json()["errors"][0]["code"] == "SERVICE_UNAVAILABLE"
                    assert answer.headers.get("retry-after")
                return time.monotonic() - started
        except httpx.HTTPError as exc:
            seen.append(type(exc).__name__)
        time.sleep(0.05)
    raise AssertionError(f"/readyz never answered {status} in {timeout}s: {seen[-5:]}")


def _describe(bad: list[Outcome]) -> str:
    return "\n".join(
        f"{o.method} {o.path}: {o.status} {o.code} retry-after={o.retry_after} "
        f"{o.seconds:.2f}s {o.error or ''}"
        for o in bad[:20]
    )


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_database_outage_answers_503_fast_and_recovers_without_losing_writes(
    stack: Stack, mode: str
) -> None:
    with (
        httpx.Client(base_url=stack.server.url, timeout=5.0) as probe,
        Traffic(stack.server.url, stack.key, "org_a1", ["mrch_a1_1", "mrch_a1_2"]) as traffic,
    ):
        time.sleep(1.0)
        outage_start = time.monotonic()
        stack.cluster.stop(mode)
        _wait_for_readyz(probe, 503, timeout=ANSWER_WITHIN)
        time.sleep(OUTAGE)
        stack.cluster.start()
        took = _wait_for_readyz(probe, 200, timeout=RECOVERY)
        recovered = time.monotonic()
        time.sleep(1.5)
    outcomes = traffic.outcomes

    bad = [o for o in outcomes if not o.acceptable_in_outage() or o.seconds >= ANSWER_WITHIN]
    assert not bad, f"{len(bad)} of {len(outcomes)} requests were not answered properly:\n" + (
        _describe(bad)
    )
    during = [o for o in outcomes if outage_start <= o.started < recovered]
    assert any(o.status == 503 for o in during), "the outage never reached a client"
    # Once ready again, the service serves: no restart, no lingering dead connections.
    settled = [o for o in outcomes if o.started >= recovered + 0.5]
    assert settled, "no traffic after recovery"
    failing = [o for o in settled if o.status not in (200, 201)]
    assert not failing, "still failing after recovery:\n" + _describe(failing)

    # Every acknowledged write is still there, read back through the API.
    checked_creates = checked_patches = 0
    with httpx.Client(base_url=stack.server.url, timeout=5.0) as client:
        headers = {"Authorization": f"Bearer {stack.key}"}
        for written in traffic.written:
            answer = client.get(f"/v1/integrations/{written.id}", headers=headers)
            assert answer.status_code == 200, (written.id, answer.text)
            body = answer.json()
            assert body["merchant_ids"] == written.merchant_ids
            allowed = [written.acknowledged_name, *written.uncertain_names]
            assert body["name"] in allowed, (written.id, body["name"], allowed)
            checked_creates += 1
            checked_patches += written.acknowledged_patches
        listed = client.get("/v1/integrations", headers=headers).json()
        assert listed["count"] >= len(traffic.written) + 2  # org_a1 starts with two
    assert checked_creates > 0
    longest = max(o.seconds for o in during)
    print(
        f"\n[outage -m {mode}] {len(outcomes)} requests, {len(during)} during the outage, "
        f"{sum(o.status == 503 for o in during)} answered 503; longest request during the "
        f"outage {longest:.3f}s; recovered {took:.2f}s after restart; acknowledged writes "
        f"checked: {checked_creates} creates, {checked_patches} renames"
    )
