"""Every key of tests/worlds/matrix.json against every integration, organisation and operation.

The expected answer comes from a small oracle of CONTRACT 1.2-1.4, computed from the world data
alone: a revoked key is 401; a missing ability is 403; outside the key's scope is 404, with the
same body as an id that does not exist; inside it, the operation succeeds (PATCH of a
non-CUSTOM_ORDERS integration is 422 INVALID_INTEGRATION_TYPE, CONTRACT 1.6/1.9).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.integrations.helpers import (
    error_entries,
    nothing_changes,
    representation,
    world,
    world_integration,
)
from tests.support import api_client, bearer

MATRIX = world("matrix")
KEY_IDS = [key["id"] for key in MATRIX["api_keys"]]
ALL_ABILITIES = {"integrations:read", "integrations:write"}
# Headers that differ between any two responses, whatever they answer.
VARYING_HEADERS = {"x-request-id", "date"}


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    """A test client over a fresh database holding the matrix world."""
    with api_client(database_url, world("matrix")) as test_client:
        yield test_client


def _key(key_id: str) -> dict[str, Any]:
    return next(k for k in MATRIX["api_keys"] if k["id"] == key_id)


def scope(key_id: str) -> set[str]:
    """The organisations a key may reach (CONTRACT 1.4)."""
    key = _key(key_id)
    if key.get("organisation_id"):
        return {key["organisation_id"]}
    group = next(g for g in MATRIX["partner_groups"] if g["id"] == key["partner_group_id"])
    partner = group["partner_id"]
    partner_orgs = {o["id"] for o in MATRIX["organisations"] if o["partner_id"] == partner}
    if group["is_admin"]:
        return partner_orgs
    return set(group.get("organisation_ids", [])) & partner_orgs


def refusal(key_id: str, ability: str) -> int | None:
    """401 or 403 if the key is refused before its scope is considered, else None."""
    key = _key(key_id)
    if key.get("revoked", False):
        return 401
    if ability not in set(key.get("abilities", ALL_ABILITIES)):
        return 403
    return None


def expected_get(key_id: str, integration: dict[str, Any]) -> int:
    refused = refusal(key_id, "integrations:read")
    if refused is not None:
        return refused
    return 200 if integration["organisation_id"] in scope(key_id) else 404


def expected_patch(key_id: str, integration: dict[str, Any]) -> int:
    refused = refusal(key_id, "integrations:write")
    if refused is not None:
        return refused
    if integration["organisation_id"] not in scope(key_id):
        return 404
    return 200 if integration["type"] == "CUSTOM_ORDERS" else 422


def expected_post(key_id: str, organisation_id: str) -> int:
    refused = refusal(key_id, "integrations:write")
    if refused is not None:
        return refused
    return 201 if organisation_id in scope(key_id) else 404


def expected_list(key_id: str) -> int:
    refused = refusal(key_id, "integrations:read")
    return 200 if refused is None else refused


def _code(status: int) -> str:
    return {
        401: "UNAUTHORISED",
        403: "FORBIDDEN",
        404: "NOT_FOUND",
        422: "INVALID_INTEGRATION_TYPE",
    }[status]


def _assert_refused(response: Any, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    entries = error_entries(response)
    assert [e["code"] for e in entries] == [_code(status)], entries
    if status == 401:
        assert response.headers["WWW-Authenticate"].split()[0].lower() == "bearer"


def _assert_same_answer(response: Any, reference: Any) -> None:
    """Out of scope is indistinguishable from nonexistent: same status, body and headers."""
    assert response.status_code == reference.status_code
    assert response.content == reference.content

    def shown(r: Any) -> dict[str, str]:
        return {k.lower(): v for k, v in r.headers.items() if k.lower() not in VARYING_HEADERS}

    assert shown(response) == shown(reference)


def _merchant_of(organisation_id: str) -> str:
    merchant: str = next(
        m["id"] for m in MATRIX["merchants"] if m["organisation_id"] == organisation_id
    )
    return merchant


@pytest.mark.parametrize("key_id", KEY_IDS)
def test_key_reaches_exactly_its_scope(key_id: str, client: TestClient, database_url: str) -> None:
    headers = bearer(next(k["secret"] for k in MATRIX["api_keys"] if k["id"] == key_id))
    in_scope = [i for i in MATRIX["integrations"] if i["organisation_id"] in scope(key_id)]

    # List: exactly the integrations of the key's organisations.
    with nothing_changes(database_url):
        listed = client.get("/v1/integrations", params={"limit": 100}, headers=headers)
    if expected_list(key_id) == 200:
        assert listed.status_code == 200, listed.text
        body = listed.json()
        assert body["count"] == len(in_scope)
        assert sorted(body["items"], key=lambda item: item["id"]) == sorted(
            (world_integration(MATRIX, i["id"]) for i in in_scope), key=lambda item: item["id"]
        )
    else:
        _assert_refused(listed, expected_list(key_id))

    # GET one: the integration, or the very answer a nonexistent id gets.
    with nothing_changes(database_url):
        missing_get = client.get("/v1/integrations/int_matrix_nonexistent", headers=headers)
    for integration in MATRIX["integrations"]:
        expected = expected_get(key_id, integration)
        with nothing_changes(database_url):
            response = client.get(f"/v1/integrations/{integration['id']}", headers=headers)
        if expected == 200:
            assert response.status_code == 200, (integration["id"], response.text)
            assert response.json() == world_integration(MATRIX, integration["id"])
        else:
            _assert_refused(response, expected)
            if expected == 404:
                _assert_same_answer(response, missing_get)

    # PATCH the name: renamed in scope, otherwise refused with nothing changed.
    new_name = f"Renamed by {key_id}"
    with nothing_changes(database_url):
        missing_patch = client.patch(
            "/v1/integrations/int_matrix_nonexistent", json={"name": new_name}, headers=headers
        )
    for integration in MATRIX["integrations"]:
        expected = expected_patch(key_id, integration)
        url = f"/v1/integrations/{integration['id']}"
        if expected == 200:
            response = client.patch(url, json={"name": new_name}, headers=headers)
            assert response.status_code == 200, (integration["id"], response.text)
            renamed = {**world_integration(MATRIX, integration["id"]), "name": new_name}
            assert response.json() == renamed
            continue
        with nothing_changes(database_url):
            response = client.patch(url, json={"name": new_name}, headers=headers)
        _assert_refused(response, expected)
        if expected == 404:
            _assert_same_answer(response, missing_patch)

    # POST into every organisation (and one that does not exist).
    created_in_scope = 0
    with nothing_changes(database_url):
        missing_post = client.post(
            "/v1/integrations",
            json={
                "organisation_id": "org_matrix_nonexistent",
                "name": "Created",
                "type": "CUSTOM_ORDERS",
                "merchant_ids": ["mrch_a1_1"],
            },
            headers=headers,
        )
    for organisation in MATRIX["organisations"]:
        org_id = organisation["id"]
        body = {
            "organisation_id": org_id,
            "name": f"Created by {key_id}",
            "type": "CUSTOM_ORDERS",
            "merchant_ids": [_merchant_of(org_id)],
        }
        expected = expected_post(key_id, org_id)
        if expected == 201:
            response = client.post("/v1/integrations", json=body, headers=headers)
            assert response.status_code == 201, (org_id, response.text)
            new_id = response.json()["id"]
            assert response.json() == representation(
                new_id, org_id, body["name"], "CUSTOM_ORDERS", "ENABLED", body["merchant_ids"]
            )
            created_in_scope += 1
            continue
        with nothing_changes(database_url):
            response = client.post("/v1/integrations", json=body, headers=headers)
        _assert_refused(response, expected)
        if expected == 404:
            _assert_same_answer(response, missing_post)

    if expected_list(key_id) == 200:
        again = client.get("/v1/integrations", params={"limit": 100}, headers=headers)
        assert again.json()["count"] == len(in_scope) + created_in_scope
