"""Concurrent writes over a real server: no lost update (CONTRACT 1.9), every create lands (1.8)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.integrations.helpers import auth, create_body, running_server, world

ORG_A1 = auth("key_org_a1")
ADMIN_A = auth("key_admin_a")


@pytest.fixture
def server(database_url: str) -> Iterator[str]:
    """The base URL of a real server over the matrix world."""
    with running_server(database_url, world("matrix")) as base_url:
        yield base_url


def _all_at_once(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """Run the calls on as many threads, released together by a barrier."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], httpx.Response]) -> httpx.Response:
        barrier.wait(timeout=10)
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def _client(base_url: str, headers: dict[str, str]) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers=headers, timeout=30)


def test_parallel_patches_of_name_and_status_both_land(server: str) -> None:
    with _client(server, ORG_A1) as setup:
        ids = [
            setup.post("/v1/integrations", json=create_body(name=f"Race {n}")).json()["id"]
            for n in range(8)
        ]
    clients = [_client(server, ORG_A1) for _ in range(2)]
    try:
        for integration_id in ids:
            url = f"/v1/integrations/{integration_id}"

            def rename(url: str = url) -> httpx.Response:
                return clients[0].patch(url, json={"name": f"Renamed {url}"})

            def disable(url: str = url) -> httpx.Response:
                return clients[1].patch(url, json={"status": "DISABLED"})

            renamed, disabled = _all_at_once([rename, disable])

            assert renamed.status_code == disabled.status_code == 200, (renamed, disabled)
            final = clients[0].get(url).json()
            assert (final["name"], final["status"]) == (f"Renamed {url}", "DISABLED")
    finally:
        for c in clients:
            c.close()


def _create_call(client: httpx.Client, body: dict[str, Any]) -> Callable[[], httpx.Response]:
    return lambda: client.post("/v1/integrations", json=body)


def test_twenty_parallel_creates_all_land_with_distinct_ids(server: str) -> None:
    clients = [_client(server, ORG_A1) for _ in range(20)]
    try:
        responses = _all_at_once(
            [_create_call(c, create_body(name=f"Parallel {n}")) for n, c in enumerate(clients)]
        )

        assert [r.status_code for r in responses] == [201] * 20, [r.text for r in responses]
        ids = {r.json()["id"] for r in responses}
        assert len(ids) == 20
        listed = clients[0].get("/v1/integrations", params={"limit": 100}).json()
        assert listed["count"] == 2 + 20
        assert ids <= {item["id"] for item in listed["items"]}
        assert {r.json()["name"] for r in responses} == {f"Parallel {n}" for n in range(20)}
    finally:
        for c in clients:
            c.close()


def test_parallel_creates_across_a_partners_organisations_keep_every_count(server: str) -> None:
    clients = [_client(server, ADMIN_A) for _ in range(16)]
    try:
        bodies = [
            create_body(name=f"P{n}", organisation_id="org_a1", merchant_ids=["mrch_a1_2"])
            if n % 2
            else create_body(name=f"P{n}", organisation_id="org_a2", merchant_ids=["mrch_a2_1"])
            for n in range(16)
        ]
        responses = _all_at_once([_create_call(c, b) for c, b in zip(clients, bodies, strict=True)])

        assert [r.status_code for r in responses] == [201] * 16, [r.text for r in responses]
        admin_count = clients[0].get("/v1/integrations").json()["count"]
        with _client(server, ORG_A1) as org_a1:
            org_count = org_a1.get("/v1/integrations").json()["count"]
        with _client(server, auth("key_assigned_a")) as assigned:
            assigned_count = assigned.get("/v1/integrations").json()["count"]
        assert (admin_count, org_count, assigned_count) == (4 + 16, 2 + 8, 2 + 8)
    finally:
        for c in clients:
            c.close()
