"""GET /v1/integrations: CONTRACT 1.7 (list)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.integrations.conftest import BULK
from tests.integrations.helpers import (
    assert_validation_error,
    auth,
    create_body,
    nothing_changes,
    world,
    world_integration,
)
from tests.support import query

ORG_A1 = auth("key_org_a1")
ADMIN_A = auth("key_admin_a")
LIST = "/v1/integrations"


def _newest_first(database_url: str, organisations: set[str]) -> list[str]:
    """The contract's order, from the stored creation times: newest first, then by id."""
    rows = query(database_url, "SELECT id, organisation_id, created_at FROM integrations")
    mine = [(created_at, id_) for id_, org, created_at in rows if org in organisations]
    return [id_ for _, id_ in sorted(mine, key=lambda r: (-r[0], r[1]))]


def _ids(response: Any) -> list[str]:
    return [item["id"] for item in response.json()["items"]]


def test_list_is_items_and_count_of_exact_representations(shared_client: TestClient) -> None:
    response = shared_client.get(LIST, headers=ORG_A1)

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"items", "count"}
    assert body["count"] == 2
    assert sorted(body["items"], key=lambda i: i["id"]) == [
        world_integration(world("matrix"), "int_a1_orders"),
        world_integration(world("matrix"), "int_a1_stripe"),
    ]


def test_default_limit_is_20_with_the_true_count(crowded: TestClient, crowded_url: str) -> None:
    response = crowded.get(LIST, headers=ORG_A1)

    assert response.status_code == 200
    assert response.json()["count"] == BULK + 2
    assert _ids(response) == _newest_first(crowded_url, {"org_a1"})[:20]


@pytest.mark.parametrize(("limit", "offset"), [(1, 0), (5, 3), (100, 0), (7, 30), (20, 31)])
def test_count_is_the_whole_scope_whatever_limit_and_offset(
    crowded: TestClient, crowded_url: str, limit: int, offset: int
) -> None:
    response = crowded.get(LIST, params={"limit": limit, "offset": offset}, headers=ORG_A1)

    assert response.status_code == 200
    assert response.json()["count"] == BULK + 2
    assert _ids(response) == _newest_first(crowded_url, {"org_a1"})[offset : offset + limit]


@pytest.mark.parametrize("offset", [32, 33, 1000, 2**31])
def test_offset_past_the_end_is_empty_with_the_true_count(crowded: TestClient, offset: int) -> None:
    response = crowded.get(LIST, params={"offset": offset}, headers=ORG_A1)

    assert response.status_code == 200
    assert response.json() == {"items": [], "count": BULK + 2}


@pytest.mark.parametrize("limit", [1, 3, 7, 20])
def test_paging_with_a_fixed_limit_visits_every_integration_once(
    crowded: TestClient, crowded_url: str, limit: int
) -> None:
    seen: list[str] = []
    offset = 0
    while True:
        page = crowded.get(LIST, params={"limit": limit, "offset": offset}, headers=ADMIN_A)
        assert page.status_code == 200
        assert page.json()["count"] == BULK + 4
        if not page.json()["items"]:
            break
        seen += _ids(page)
        offset += limit

    assert seen == _newest_first(crowded_url, {"org_a1", "org_a2"})
    assert len(seen) == len(set(seen)) == BULK + 4


def test_newest_first_then_by_id(client: TestClient, database_url: str) -> None:
    created = [
        client.post(LIST, json=create_body(name=f"Made {n}"), headers=ORG_A1).json()["id"]
        for n in range(5)
    ]

    response = client.get(LIST, headers=ORG_A1)

    assert _ids(response)[:5] == list(reversed(created))
    assert _ids(response) == _newest_first(database_url, {"org_a1"})


def test_requests_one_after_another_are_never_tied(client: TestClient, database_url: str) -> None:
    created = [
        client.post(LIST, json=create_body(name=f"Made {n}"), headers=ORG_A1).json()["id"]
        for n in range(5)
    ]

    times = {
        id_: created_at
        for id_, created_at in query(database_url, "SELECT id, created_at FROM integrations")
    }
    assert len({times[id_] for id_ in created}) == 5
    assert [times[id_] for id_ in created] == sorted(times[id_] for id_ in created)


@pytest.mark.parametrize("limit", ["1", "100", "50"])
def test_limit_within_range_is_accepted(shared_client: TestClient, limit: str) -> None:
    response = shared_client.get(f"{LIST}?limit={limit}", headers=ADMIN_A)

    assert response.status_code == 200
    assert response.json()["count"] == 4


@pytest.mark.parametrize(
    "query_string",
    [
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=abc",
        "limit=1.5",
        "limit=",
        "limit=true",
        "limit=1e2",
        "limit=99999999999999999999999",
        "limit=1&limit=2",
        "limit=5&limit=5",
    ],
)
def test_bad_limit_is_validation_error_on_limit(
    shared_client: TestClient, shared_url: str, query_string: str
) -> None:
    with nothing_changes(shared_url):
        response = shared_client.get(f"{LIST}?{query_string}", headers=ADMIN_A)

    assert_validation_error(response, "limit")


@pytest.mark.parametrize(
    "query_string",
    ["offset=-1", "offset=x", "offset=2.0", "offset=", "offset=0&offset=1"],
)
def test_bad_offset_is_validation_error_on_offset(
    shared_client: TestClient, shared_url: str, query_string: str
) -> None:
    with nothing_changes(shared_url):
        response = shared_client.get(f"{LIST}?{query_string}", headers=ADMIN_A)

    assert_validation_error(response, "offset")


@pytest.mark.parametrize(
    "name", ["organisation_id", "status", "type", "page", "Limit", "filter[status]"]
)
def test_unknown_query_parameter_is_validation_error_not_a_silent_filter(
    shared_client: TestClient, shared_url: str, name: str
) -> None:
    with nothing_changes(shared_url):
        response = shared_client.get(LIST, params={name: "org_a1"}, headers=ADMIN_A)

    assert_validation_error(response, name)


def test_bad_limit_and_offset_are_both_reported(shared_client: TestClient) -> None:
    response = shared_client.get(f"{LIST}?limit=0&offset=-1", headers=ADMIN_A)

    assert_validation_error(response, "limit", "offset")
    assert len(response.json()["errors"]) == 2


def test_a_key_with_no_organisations_lists_nothing(shared_client: TestClient) -> None:
    response = shared_client.get(LIST, headers=auth("key_unassigned_a"))

    assert response.status_code == 200
    assert response.json() == {"items": [], "count": 0}
