"""GET /v1/integrations/{id}: CONTRACT 1.4, 1.6 and 1.10."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.integrations.helpers import (
    INTEGRATION_KEYS,
    assert_error,
    auth,
    nothing_changes,
    world,
    world_integration,
)

MATRIX = world("matrix")
ADMIN_A = auth("key_admin_a")


@pytest.mark.parametrize("integration_id", ["int_a1_orders", "int_a2_orders", "int_a2_stripe"])
def test_get_answers_the_exact_representation(
    shared_client: TestClient, integration_id: str
) -> None:
    response = shared_client.get(f"/v1/integrations/{integration_id}", headers=ADMIN_A)

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Type"].startswith("application/json")
    assert set(response.json()) == set(INTEGRATION_KEYS)
    assert response.json() == world_integration(MATRIX, integration_id)


def test_merchant_order_of_the_world_is_kept(shared_client: TestClient) -> None:
    response = shared_client.get("/v1/integrations/int_a2_orders", headers=ADMIN_A)

    assert response.json()["merchant_ids"] == ["mrch_a2_2", "mrch_a2_1"]


@pytest.mark.parametrize(
    "integration_id",
    [
        "int_nonexistent",
        "int_b1_orders",
        "int_d_orders",
        "INT_A1_ORDERS",
        "int_a1_orders%20",
        "int_" + "x" * 5000,
        "%00",
        "int_a1_orders'--",
        "%E2%98%83",
    ],
    ids=[
        "nonexistent",
        "other-partner",
        "direct-org",
        "wrong-case",
        "trailing-space",
        "very-long",
        "nul",
        "quote",
        "snowman",
    ],
)
def test_missing_or_out_of_scope_integration_is_not_found(
    shared_client: TestClient, shared_url: str, integration_id: str
) -> None:
    with nothing_changes(shared_url):
        response = shared_client.get(f"/v1/integrations/{integration_id}", headers=ADMIN_A)

    assert_error(response, 404, "NOT_FOUND")
