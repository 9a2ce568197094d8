"""Fixtures of the events API suites: the matrix world, with events made through the API.

A world file records no events (CONTRACT 3.4), so `trail` makes them the way clients do: a
create and a rename in each organisation of the matrix world, by a key that can reach it.
`client`/`database_url` give a fresh database per test; `trail_client`/`trail_url` one
database per module and dialect holding the trail, for tests that only read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import DIALECTS, _require_postgres
from tests.events.helpers import wait_for_events
from tests.integrations.helpers import auth, create_body, world
from tests.support import DatabaseMaker, api_client

# (organisation, one of its merchants, a key that can write there)
WRITERS = (
    ("org_a1", "mrch_a1_1", "key_org_a1"),
    ("org_a2", "mrch_a2_1", "key_admin_a"),
    ("org_b1", "mrch_b1_1", "key_admin_b"),
    ("org_d", "mrch_d_1", "key_org_d"),
)


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    """A test client on the real app over a fresh database holding the matrix world."""
    with api_client(database_url, world("matrix")) as test_client:
        yield test_client


def make_trail(client: TestClient) -> list[dict[str, Any]]:
    """A create and a rename in each organisation of the matrix world, one after the other;
    the events of all of them, newest first, once every one is listed."""
    for organisation, merchant, key in WRITERS:
        made = client.post(
            "/v1/integrations",
            json=create_body(organisation_id=organisation, merchant_ids=[merchant]),
            headers=auth(key),
        )
        assert made.status_code == 201, made.text
        renamed = client.patch(
            f"/v1/integrations/{made.json()['id']}",
            json={"name": f"Renamed in {organisation}"},
            headers=auth(key),
        )
        assert renamed.status_code == 200, renamed.text
    return make_trail_listing(client)


def make_trail_listing(client: TestClient) -> list[dict[str, Any]]:
    """The trail's events: key_admin_a sees org_a1's and org_a2's, key_admin_b org_b1's,
    key_org_d org_d's; waiting until all are listed."""
    events = [
        *wait_for_events(client, auth("key_admin_a"), 4),
        *wait_for_events(client, auth("key_admin_b"), 2),
        *wait_for_events(client, auth("key_org_d"), 2),
    ]
    assert len(events) == 2 * len(WRITERS)
    return events


@pytest.fixture(scope="module", params=DIALECTS)
def trail_url(request: pytest.FixtureRequest, database_maker: DatabaseMaker) -> Iterator[str]:
    """A database of this run's dialect shared by one module's tests that only read."""
    if request.param == "postgresql":
        _require_postgres()
    with database_maker.database(request.param) as url:
        yield url


@pytest.fixture(scope="module")
def trail_client(trail_url: str) -> Iterator[TestClient]:
    """A test client over the shared database: the matrix world and its trail of events."""
    with api_client(trail_url, world("matrix")) as test_client:
        make_trail(test_client)
        yield test_client


@pytest.fixture(scope="module")
def trail(trail_client: TestClient) -> list[dict[str, Any]]:
    """Every event of the shared database: of partner A's, partner B's, then org_d's
    organisations, each part newest first."""
    return make_trail_listing(trail_client)
