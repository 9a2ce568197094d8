"""Every example of the specification, replayed against the app on tests/worlds/spec.json."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.integrations.helpers import auth, nothing_changes, world
from tests.support import api_client, query

ADMIN = auth("key_admin", "spec")
ORG = auth("key_org", "spec")
READ_ONLY = auth("key_ro", "spec")

ORDERS = {
    "id": "int_abc123",
    "organisation_id": "org_xyz456",
    "name": "Orders API Integration",
    "type": "CUSTOM_ORDERS",
    "status": "ENABLED",
    "merchant_ids": ["mrch_111", "mrch_222"],
    "links": [{"rel": "self", "uri": "/v1/integrations/int_abc123"}],
}
STRIPE = {
    "id": "int_def789",
    "organisation_id": "org_xyz456",
    "name": "Stripe Main",
    "type": "STRIPE",
    "status": "ENABLED",
    "merchant_ids": ["mrch_111"],
    "links": [{"rel": "self", "uri": "/v1/integrations/int_def789"}],
}
NOT_FOUND = {"errors": [{"code": "NOT_FOUND", "message": "Not found"}]}


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    with api_client(database_url, world("spec")) as test_client:
        yield test_client


def test_example_1_partner_key_lists_both_integrations_of_its_organisation(
    client: TestClient,
) -> None:
    response = client.get("/v1/integrations/?limit=20&offset=0", headers=ADMIN)

    assert response.status_code == 200
    assert response.json() == {"items": [ORDERS, STRIPE], "count": 2}


def test_example_2_organisation_key_sees_every_integration_of_its_organisation(
    client: TestClient,
) -> None:
    """Decision: the spec's Example 2 shows only int_abc123, but int_def789 belongs to the same
    organisation and the scope rules say an organisation key accesses its own organisation's
    integrations. The project settles it: an organisation key sees every integration of its
    organisation, of any type (CONTRACT 1.4)."""
    response = client.get("/v1/integrations/?limit=20&offset=0", headers=ORG)

    assert response.status_code == 200
    assert response.json() == {"items": [ORDERS, STRIPE], "count": 2}


def test_example_3_create_answers_201_with_location_and_the_integration(
    client: TestClient, database_url: str
) -> None:
    body = {
        "organisation_id": "org_xyz456",
        "name": "Orders API Integration",
        "type": "CUSTOM_ORDERS",
        "status": "DISABLED",
        "merchant_ids": ["mrch_111", "mrch_222"],
    }

    response = client.post("/v1/integrations/", json=body, headers=ADMIN)

    assert response.status_code == 201, response.text
    created = response.json()
    new_id = created["id"]
    assert re.fullmatch(r"int_[A-Za-z0-9_-]+", new_id), new_id
    suffix = new_id.removeprefix("int_")
    # At least 96 bits: 16 base64url characters, or 24 if the suffix is hexadecimal.
    assert len(suffix) >= (24 if re.fullmatch(r"[0-9a-f]+", suffix) else 16), new_id
    assert new_id not in {"int_abc123", "int_def789"}
    assert created == {
        "id": new_id,
        "organisation_id": "org_xyz456",
        "name": "Orders API Integration",
        "type": "CUSTOM_ORDERS",
        "status": "DISABLED",
        "merchant_ids": ["mrch_111", "mrch_222"],
        "links": [{"rel": "self", "uri": f"/v1/integrations/{new_id}"}],
    }
    assert response.headers["Location"] == f"/v1/integrations/{new_id}"
    assert client.get(f"/v1/integrations/{new_id}", headers=ADMIN).json() == created
    assert query(database_url, "SELECT count(*) FROM integrations") == [(3,)]


def test_example_4_get_by_id_returns_the_integration(client: TestClient) -> None:
    response = client.get("/v1/integrations/int_abc123", headers=ADMIN)

    assert response.status_code == 200
    assert response.json() == ORDERS


def test_example_4_unknown_integration_is_the_spec_404_body(client: TestClient) -> None:
    response = client.get("/v1/integrations/int_doesnotexist", headers=ADMIN)

    assert response.status_code == 404
    assert response.json() == NOT_FOUND


def test_example_5_patch_renames_and_keeps_everything_else(client: TestClient) -> None:
    """The spec's Example 5 shows DISABLED because it follows Example 3; here the integration
    is first disabled so the answer is the spec's body exactly."""
    disabled = client.patch(
        "/v1/integrations/int_abc123", json={"status": "DISABLED"}, headers=ADMIN
    )
    assert disabled.status_code == 200, disabled.text

    response = client.patch(
        "/v1/integrations/int_abc123", json={"name": "Orders API Integration - EU"}, headers=ADMIN
    )

    expected: dict[str, Any] = {
        **ORDERS,
        "name": "Orders API Integration - EU",
        "status": "DISABLED",
    }
    assert response.status_code == 200
    assert response.json() == expected
    assert client.get("/v1/integrations/int_abc123", headers=ADMIN).json() == expected


def test_unauthorised_is_the_spec_401_body(client: TestClient, database_url: str) -> None:
    with nothing_changes(database_url):
        response = client.get(
            "/v1/integrations/", headers={"Authorization": "Bearer cbs_not_a_real_key_00000000"}
        )

    assert response.status_code == 401
    assert response.json() == {"errors": [{"code": "UNAUTHORISED", "message": "Unauthorised"}]}
    assert response.headers["WWW-Authenticate"].split()[0].lower() == "bearer"


def test_forbidden_is_the_spec_403_body(client: TestClient, database_url: str) -> None:
    with nothing_changes(database_url):
        response = client.patch(
            "/v1/integrations/int_abc123", json={"name": "x"}, headers=READ_ONLY
        )

    assert response.status_code == 403
    assert response.json() == {"errors": [{"code": "FORBIDDEN", "message": "Forbidden"}]}


def test_not_found_organisation_is_the_spec_404_body(client: TestClient, database_url: str) -> None:
    body = {
        "organisation_id": "org_nope",
        "name": "Orders",
        "type": "CUSTOM_ORDERS",
        "merchant_ids": ["mrch_111"],
    }
    with nothing_changes(database_url):
        response = client.post("/v1/integrations/", json=body, headers=ADMIN)

    assert response.status_code == 404
    assert response.json() == NOT_FOUND


def test_invalid_merchant_ids_is_the_spec_422_body(client: TestClient, database_url: str) -> None:
    body = {
        "organisation_id": "org_xyz456",
        "name": "Orders",
        "type": "CUSTOM_ORDERS",
        "merchant_ids": ["mrch_111", "mrch_999"],
    }
    with nothing_changes(database_url):
        response = client.post("/v1/integrations/", json=body, headers=ADMIN)

    assert response.status_code == 422
    assert response.json() == {
        "errors": [
            {
                "code": "INVALID_MERCHANT_IDS",
                "message": (
                    "One or more merchant_ids are invalid or inaccessible for this organisation"
                ),
            }
        ]
    }
