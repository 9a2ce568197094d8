"""PATCH /v1/integrations/{id}: CONTRACT 1.5 (validation) and 1.9 (update)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.integrations.helpers import (
    assert_error,
    assert_validation_error,
    auth,
    nothing_changes,
    world,
    world_integration,
)

ORG_A1 = auth("key_org_a1")
ADMIN_A = auth("key_admin_a")
MATRIX = world("matrix")
ORDERS = "/v1/integrations/int_a1_orders"
STRIPE = "/v1/integrations/int_a1_stripe"


def _patch(client: TestClient, url: str, body: Any, headers: dict[str, str] = ORG_A1) -> Any:
    return client.patch(url, json=body, headers=headers)


def _refused(client: TestClient, database_url: str, body: Any, url: str = ORDERS) -> Any:
    with nothing_changes(database_url):
        return _patch(client, url, body)


def test_patch_name_answers_the_whole_renamed_integration(client: TestClient) -> None:
    response = _patch(client, ORDERS, {"name": "A1 orders - EU"})

    expected = {**world_integration(MATRIX, "int_a1_orders"), "name": "A1 orders - EU"}
    assert response.status_code == 200, response.text
    assert response.json() == expected
    assert response.headers["Cache-Control"] == "no-store"
    assert client.get(ORDERS, headers=ORG_A1).json() == expected


def test_patch_status_disabled_disables(client: TestClient) -> None:
    response = _patch(client, ORDERS, {"status": "DISABLED"})

    expected = {**world_integration(MATRIX, "int_a1_orders"), "status": "DISABLED"}
    assert response.status_code == 200, response.text
    assert response.json() == expected
    assert client.get(ORDERS, headers=ORG_A1).json() == expected


def test_patch_name_and_status_together(client: TestClient) -> None:
    response = _patch(client, ORDERS, {"name": "Both", "status": "DISABLED"})

    expected = {**world_integration(MATRIX, "int_a1_orders"), "name": "Both", "status": "DISABLED"}
    assert response.status_code == 200, response.text
    assert response.json() == expected
    assert client.get(ORDERS, headers=ORG_A1).json() == expected


def test_disabling_a_disabled_integration_is_a_successful_no_op(
    shared_client: TestClient, shared_url: str
) -> None:
    with nothing_changes(shared_url):
        response = _patch(
            shared_client, "/v1/integrations/int_a2_orders", {"status": "DISABLED"}, ADMIN_A
        )

    assert response.status_code == 200, response.text
    assert response.json() == world_integration(MATRIX, "int_a2_orders")


def test_disabling_twice_succeeds_both_times(client: TestClient) -> None:
    first = _patch(client, ORDERS, {"status": "DISABLED"})
    second = _patch(client, ORDERS, {"status": "DISABLED"})

    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert second.json()["status"] == "DISABLED"


def test_name_is_stored_exactly_not_trimmed(client: TestClient) -> None:
    name = "  spaced \U0001f600 "

    response = _patch(client, ORDERS, {"name": name})

    assert response.status_code == 200, response.text
    assert client.get(ORDERS, headers=ORG_A1).json()["name"] == name


def test_name_of_255_emoji_is_accepted(client: TestClient) -> None:
    response = _patch(client, ORDERS, {"name": "\U0001f680" * 255})

    assert response.status_code == 200, response.text
    assert client.get(ORDERS, headers=ORG_A1).json()["name"] == "\U0001f680" * 255


def test_patch_leaves_other_integrations_alone(client: TestClient) -> None:
    _patch(client, ORDERS, {"name": "Only this one", "status": "DISABLED"})

    other = client.get("/v1/integrations/int_a1_stripe", headers=ORG_A1)
    assert other.json() == world_integration(MATRIX, "int_a1_stripe")


def test_empty_body_is_missing_update_fields(shared_client: TestClient, shared_url: str) -> None:
    response = _refused(shared_client, shared_url, {})

    assert_error(response, 422, "MISSING_UPDATE_FIELDS")


def test_status_enabled_is_validation_error(shared_client: TestClient, shared_url: str) -> None:
    response = _refused(shared_client, shared_url, {"status": "ENABLED"})

    assert_validation_error(response, "status")


@pytest.mark.parametrize("status", ["disabled", "PAUSED", "", None, 0, True, ["DISABLED"]])
def test_status_other_than_disabled_is_validation_error(
    shared_client: TestClient, shared_url: str, status: Any
) -> None:
    response = _refused(shared_client, shared_url, {"status": status})

    assert_validation_error(response, "status")


@pytest.mark.parametrize(
    "name",
    ["", "   ", "a" * 256, "\U0001f600" * 256, "x\x00", "x\x1b", "x\x7f", "x\ny", None, 123, True],
    ids=[
        "empty",
        "blank",
        "256-ascii",
        "256-emoji",
        "nul",
        "escape",
        "delete",
        "newline",
        "null",
        "integer",
        "boolean",
    ],
)
def test_bad_name_is_validation_error_on_name(
    shared_client: TestClient, shared_url: str, name: Any
) -> None:
    response = _refused(shared_client, shared_url, {"name": name})

    assert_validation_error(response, "name")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("type", "CUSTOM_ORDERS"),
        ("organisation_id", "org_a1"),
        ("merchant_ids", ["mrch_a1_1"]),
        ("id", "int_a1_orders"),
        ("links", []),
        ("stauts", "DISABLED"),
    ],
)
def test_field_other_than_name_or_status_is_validation_error(
    shared_client: TestClient, shared_url: str, field: str, value: Any
) -> None:
    response = _refused(shared_client, shared_url, {"name": "Renamed", field: value})

    assert_validation_error(response, field)


def test_misspelt_status_alone_is_validation_error_not_missing_fields(
    shared_client: TestClient, shared_url: str
) -> None:
    response = _refused(shared_client, shared_url, {"stauts": "DISABLED"})

    assert_validation_error(response, "stauts")


def test_every_problem_gets_its_own_entry(shared_client: TestClient, shared_url: str) -> None:
    response = _refused(shared_client, shared_url, {"name": "", "status": "ENABLED", "type": "X"})

    assert_validation_error(response, "name", "status", "type")
    assert len(response.json()["errors"]) == 3


@pytest.mark.parametrize(
    "body", [{"name": "Renamed"}, {"status": "DISABLED"}, {"name": "Renamed", "status": "DISABLED"}]
)
@pytest.mark.parametrize("integration_id", ["int_a1_stripe", "int_a2_stripe"])
def test_any_patch_of_a_non_custom_orders_integration_is_refused(
    shared_client: TestClient, shared_url: str, body: dict[str, str], integration_id: str
) -> None:
    with nothing_changes(shared_url):
        response = _patch(shared_client, f"/v1/integrations/{integration_id}", body, ADMIN_A)

    assert_error(response, 422, "INVALID_INTEGRATION_TYPE")


def test_patch_of_a_disabled_stripe_integration_is_refused_too(
    shared_client: TestClient, shared_url: str
) -> None:
    b1_admin = auth("key_admin_b")
    with nothing_changes(shared_url):
        response = _patch(
            shared_client, "/v1/integrations/int_b1_stripe", {"status": "DISABLED"}, b1_admin
        )

    assert_error(response, 422, "INVALID_INTEGRATION_TYPE")


@pytest.mark.parametrize(
    "integration_id",
    ["int_nonexistent", "int_a2_orders", "int_b1_orders", "int_d_orders", "INT_A1_ORDERS"],
)
def test_patch_of_a_missing_or_out_of_scope_integration_is_not_found(
    shared_client: TestClient, shared_url: str, integration_id: str
) -> None:
    response = _refused(
        shared_client, shared_url, {"name": "Renamed"}, f"/v1/integrations/{integration_id}"
    )

    assert_error(response, 404, "NOT_FOUND")
