"""Several instances on one PostgreSQL: started at the same moment they migrate once, and the
contract holds whichever of them answers, revocation included."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from cbstop.world.loader import load_world
from tests.conftest import _require_postgres
from tests.integrations.helpers import secret, world
from tests.reliability.processes import RevocationWatch, Server, cbstop
from tests.support import TEST_KEY_SECRET, DatabaseMaker, query

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("servers")]

REVOKED_WITHIN = 1.0  # seconds, on every instance


@pytest.fixture(scope="module")
def instances(database_maker: DatabaseMaker) -> Iterator[tuple[str, list[Server], int]]:
    """Two single-process instances and one with two workers, started together on a fresh,
    unmigrated database; the matrix world loaded once they all serve."""
    _require_postgres()
    with database_maker.database("postgresql", migrated=False) as url:
        servers = [Server(url), Server(url), Server(url, workers=2)]
        for server in servers:
            server.start()
        try:
            for server in servers:
                server.wait_ready()
            migrated = query(url, "SELECT version_num FROM alembic_version")
            load_world(url, world("matrix"), key_secret=TEST_KEY_SECRET)
            yield url, servers, len(migrated)
        finally:
            for server in servers:
                server.stop()
                server.cleanup()


def test_instances_started_together_migrate_once_and_agree(
    instances: tuple[str, list[Server], int],
) -> None:
    _, servers, versions = instances
    assert versions == 1
    matrix = world("matrix")
    a, b, c = (httpx.Client(base_url=s.url, timeout=5) for s in servers)
    headers = {"Authorization": f"Bearer {secret(matrix, 'key_org_a1')}"}
    with a, b, c:
        body = {
            "organisation_id": "org_a1",
            "name": "made on A",
            "type": "CUSTOM_ORDERS",
            "merchant_ids": ["mrch_a1_2", "mrch_a1_1"],
        }
        created = a.post("/v1/integrations", json=body, headers=headers)
        assert created.status_code == 201, created.text
        item = created.headers["location"]
        assert b.get(item, headers=headers).json() == created.json()
        patched = c.patch(item, json={"name": "renamed on C"}, headers=headers)
        assert patched.status_code == 200
        assert a.get(item, headers=headers).json() == {**created.json(), "name": "renamed on C"}
        for client in (a, b, c):
            listed = client.get("/v1/integrations", headers=headers).json()
            assert listed["count"] == 3  # org_a1's two from the world, and the new one
            assert listed["items"][0]["id"] == created.json()["id"]


def test_a_key_revoked_through_the_cli_stops_working_on_every_instance_within_1s(
    instances: tuple[str, list[Server], int],
) -> None:
    url, servers, _ = instances
    matrix = world("matrix")
    headers = {"Authorization": f"Bearer {secret(matrix, 'key_org_d')}"}
    clients = [httpx.Client(base_url=s.url, headers=headers, timeout=5) for s in servers]
    answers: list[tuple[float, int]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            for client in clients:
                answer = client.get("/v1/integrations")
                answers.append((time.monotonic(), answer.status_code))
            time.sleep(0.01)

    try:
        for client in clients * 4:  # every worker has the key in its cache
            assert client.get("/v1/integrations").status_code == 200
        poller = threading.Thread(target=poll)
        poller.start()
        try:
            with RevocationWatch(url, "key_org_d") as watch:
                done = cbstop(["keys", "revoke", "key_org_d"], CBSTOP_DATABASE_URL=url)
                assert done.returncode == 0, done.stderr
                time.sleep(REVOKED_WITHIN + 0.5)
        finally:
            stop.set()
            poller.join()
    finally:
        for client in clients:
            client.close()
    assert {status for _, status in answers} <= {200, 401}
    assert answers[-1][1] == 401
    assert watch.seen is not None, "the revocation never reached the database"
    last_success = max(t for t, status in answers if status == 200)
    delay = last_success - watch.seen
    print(f"\n[instances] revoked key last answered {delay:.3f}s after the revocation committed")
    assert delay < REVOKED_WITHIN
