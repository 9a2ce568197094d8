"""POST /v1/integrations: CONTRACT 1.5 (validation) and 1.8 (create)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.integrations.helpers import (
    assert_error,
    assert_validation_error,
    auth,
    create_body,
    integration_ids,
    nothing_changes,
    representation,
    without,
)

ORG_A1 = auth("key_org_a1")
ADMIN_A = auth("key_admin_a")
REQUIRED = ("organisation_id", "name", "type", "merchant_ids")


def _create(client: TestClient, body: Any, headers: dict[str, str] = ORG_A1) -> Any:
    return client.post("/v1/integrations", json=body, headers=headers)


def _refused(client: TestClient, database_url: str, body: Any) -> Any:
    with nothing_changes(database_url):
        return _create(client, body)


# --- success -----------------------------------------------------------------------------------


def test_create_answers_201_location_and_the_whole_integration(client: TestClient) -> None:
    body = create_body(merchant_ids=["mrch_a1_1", "mrch_a1_2"], status="DISABLED")

    response = _create(client, body)

    assert response.status_code == 201, response.text
    new_id = response.json()["id"]
    assert response.json() == representation(
        new_id, "org_a1", "New orders feed", "CUSTOM_ORDERS", "DISABLED", ["mrch_a1_1", "mrch_a1_2"]
    )
    assert response.headers["Location"] == f"/v1/integrations/{new_id}"
    assert response.headers["Cache-Control"] == "no-store"
    fetched = client.get(f"/v1/integrations/{new_id}", headers=ORG_A1)
    assert fetched.status_code == 200
    assert fetched.json() == response.json()


def test_create_without_status_is_enabled(client: TestClient) -> None:
    response = _create(client, create_body())

    assert response.status_code == 201, response.text
    assert response.json()["status"] == "ENABLED"


@pytest.mark.parametrize("status", ["ENABLED", "DISABLED"])
def test_create_accepts_either_status(client: TestClient, status: str) -> None:
    response = _create(client, create_body(status=status))

    assert response.status_code == 201, response.text
    assert response.json()["status"] == status


def test_create_keeps_the_merchant_order_given(client: TestClient) -> None:
    response = _create(client, create_body(merchant_ids=["mrch_a1_2", "mrch_a1_1"]))

    assert response.status_code == 201, response.text
    assert response.json()["merchant_ids"] == ["mrch_a1_2", "mrch_a1_1"]
    new_id = response.json()["id"]
    fetched = client.get(f"/v1/integrations/{new_id}", headers=ORG_A1).json()
    assert fetched["merchant_ids"] == ["mrch_a1_2", "mrch_a1_1"]


def test_created_ids_are_int_and_96_bits_of_url_safe_randomness(client: TestClient) -> None:
    ids = {_create(client, create_body(name=f"n{i}")).json()["id"] for i in range(10)}

    assert len(ids) == 10
    for new_id in ids:
        suffix = new_id.removeprefix("int_")
        assert new_id.startswith("int_") and re.fullmatch(r"[A-Za-z0-9_-]+", suffix), new_id
        assert len(suffix) >= (24 if re.fullmatch(r"[0-9a-f]+", suffix) else 16), new_id


def test_partner_admin_creates_in_any_organisation_of_its_partner(client: TestClient) -> None:
    body = create_body(organisation_id="org_a2", merchant_ids=["mrch_a2_2"])

    response = _create(client, body, ADMIN_A)

    assert response.status_code == 201, response.text
    assert response.json()["organisation_id"] == "org_a2"


def test_name_of_255_emoji_is_accepted_and_stored_exactly(client: TestClient) -> None:
    name = "\U0001f600" * 255

    response = _create(client, create_body(name=name))

    assert response.status_code == 201, response.text
    fetched = client.get(f"/v1/integrations/{response.json()['id']}", headers=ORG_A1)
    assert fetched.json()["name"] == name


@pytest.mark.parametrize(
    "name",
    [
        "  padded  ",
        "x",
        "Tab\u00a0non-breaking",
        "Caf\u00e9 \u2013 na\u00efve \u6771\u4eac",
        "a" * 255,
    ],
    ids=["padded", "one-char", "nbsp", "unicode", "255-ascii"],
)
def test_name_is_stored_exactly_as_sent(client: TestClient, name: str) -> None:
    response = _create(client, create_body(name=name))

    assert response.status_code == 201, response.text
    assert response.json()["name"] == name
    fetched = client.get(f"/v1/integrations/{response.json()['id']}", headers=ORG_A1)
    assert fetched.json()["name"] == name


def test_merchant_ids_of_1000_well_formed_entries_pass_validation(
    shared_client: TestClient, shared_url: str
) -> None:
    """1000 entries is within the schema, so the answer is the business rule on existence."""
    body = create_body(merchant_ids=[f"mrch_unknown_{n}" for n in range(1000)])

    response = _refused(shared_client, shared_url, body)

    assert_error(response, 422, "INVALID_MERCHANT_IDS")


def test_merchant_id_of_64_characters_passes_validation(
    shared_client: TestClient, shared_url: str
) -> None:
    response = _refused(shared_client, shared_url, create_body(merchant_ids=["m" * 64]))

    assert_error(response, 422, "INVALID_MERCHANT_IDS")


# --- schema validation (1.5) -------------------------------------------------------------------


@pytest.mark.parametrize("field", REQUIRED)
def test_missing_required_field_is_validation_error_on_that_field(
    shared_client: TestClient, shared_url: str, field: str
) -> None:
    response = _refused(shared_client, shared_url, without(create_body(), field))

    assert_validation_error(response, field)


@pytest.mark.parametrize("field", [*REQUIRED, "status"])
def test_explicit_null_is_validation_error(
    shared_client: TestClient, shared_url: str, field: str
) -> None:
    response = _refused(shared_client, shared_url, create_body(**{field: None}))

    assert_validation_error(response, field)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("organisation_id", 5),
        ("organisation_id", ["org_a1"]),
        ("name", 123),
        ("name", True),
        ("name", ["New"]),
        ("name", {"en": "New"}),
        ("type", 1),
        ("status", False),
        ("status", 0),
        ("merchant_ids", "mrch_a1_1"),
        ("merchant_ids", {"0": "mrch_a1_1"}),
        ("merchant_ids", 7),
    ],
)
def test_wrong_json_type_is_not_coerced(
    shared_client: TestClient, shared_url: str, field: str, value: Any
) -> None:
    response = _refused(shared_client, shared_url, create_body(**{field: value}))

    assert_validation_error(response, field)


@pytest.mark.parametrize("entry", [1, None, True, ["mrch_a1_1"], {"id": "mrch_a1_1"}])
def test_wrong_merchant_entry_is_named_by_its_index(
    shared_client: TestClient, shared_url: str, entry: Any
) -> None:
    body = create_body(merchant_ids=["mrch_a1_1", "mrch_a1_2", entry])

    response = _refused(shared_client, shared_url, body)

    assert_validation_error(response, "merchant_ids.2")


@pytest.mark.parametrize("field", ["stauts", "id", "links", "partner_id", "Name"])
def test_unknown_field_is_validation_error_and_creates_nothing(
    shared_client: TestClient, shared_url: str, field: str
) -> None:
    response = _refused(shared_client, shared_url, create_body(**{field: "DISABLED"}))

    assert_validation_error(response, field)


def test_misspelt_status_does_not_create_an_enabled_integration(
    shared_client: TestClient, shared_url: str
) -> None:
    before = integration_ids(shared_url)

    response = _create(shared_client, without(create_body(stauts="DISABLED"), "status"))

    assert_validation_error(response, "stauts")
    assert integration_ids(shared_url) == before


@pytest.mark.parametrize(
    "name",
    [
        "",
        " ",
        "   \t  ",
        "\u3000",
        "a" * 256,
        "\U0001f600" * 256,
        "bad\x00name",
        "bad\x1fname",
        "bad\x7fname",
        "line\nbreak",
        "tab\tinside",
    ],
    ids=[
        "empty",
        "space",
        "whitespace",
        "ideographic-space",
        "256-ascii",
        "256-emoji",
        "nul",
        "unit-separator",
        "delete",
        "newline",
        "tab",
    ],
)
def test_bad_name_is_validation_error_on_name(
    shared_client: TestClient, shared_url: str, name: str
) -> None:
    response = _refused(shared_client, shared_url, create_body(name=name))

    assert_validation_error(response, "name")


@pytest.mark.parametrize("organisation_id", ["", "o" * 10_000], ids=["empty", "very-long"])
def test_unusable_organisation_id_is_refused_without_creating(
    shared_client: TestClient, shared_url: str, organisation_id: str
) -> None:
    """An organisation id that cannot exist is refused either as schema or as not found."""
    response = _refused(shared_client, shared_url, create_body(organisation_id=organisation_id))

    assert response.status_code in (404, 422), response.text
    if response.status_code == 404:
        assert_error(response, 404, "NOT_FOUND")
    else:
        assert_validation_error(response, "organisation_id")


@pytest.mark.parametrize("type_", ["STRIPE", "custom_orders", "CUSTOM_ORDERS ", "", "SHOPIFY"])
def test_type_other_than_custom_orders_is_validation_error_on_type(
    shared_client: TestClient, shared_url: str, type_: str
) -> None:
    response = _refused(shared_client, shared_url, create_body(type=type_))

    assert_validation_error(response, "type")


@pytest.mark.parametrize("status", ["enabled", "PAUSED", "", "DISABLED "])
def test_status_outside_the_list_is_validation_error_on_status(
    shared_client: TestClient, shared_url: str, status: str
) -> None:
    response = _refused(shared_client, shared_url, create_body(status=status))

    assert_validation_error(response, "status")


def test_empty_merchant_ids_is_validation_error(shared_client: TestClient, shared_url: str) -> None:
    response = _refused(shared_client, shared_url, create_body(merchant_ids=[]))

    assert_validation_error(response, "merchant_ids")


def test_1001_merchant_ids_is_validation_error(shared_client: TestClient, shared_url: str) -> None:
    body = create_body(merchant_ids=[f"mrch_{n}" for n in range(1001)])

    response = _refused(shared_client, shared_url, body)

    assert_validation_error(response, "merchant_ids")


@pytest.mark.parametrize("entry", ["", "m" * 65], ids=["empty", "65-chars"])
def test_merchant_id_out_of_length_is_named_by_its_index(
    shared_client: TestClient, shared_url: str, entry: str
) -> None:
    body = create_body(merchant_ids=["mrch_a1_1", entry])

    response = _refused(shared_client, shared_url, body)

    assert_validation_error(response, "merchant_ids.1")


def test_every_problem_gets_its_own_entry(shared_client: TestClient, shared_url: str) -> None:
    body = {"name": 1, "type": "STRIPE", "merchant_ids": ["mrch_a1_1", 2, ""], "stauts": "x"}

    response = _refused(shared_client, shared_url, body)

    assert_validation_error(
        response, "organisation_id", "name", "type", "merchant_ids.1", "merchant_ids.2", "stauts"
    )
    assert len(response.json()["errors"]) == 6


# --- business rules (1.8) ----------------------------------------------------------------------


def test_duplicate_merchant_ids_is_refused(shared_client: TestClient, shared_url: str) -> None:
    body = create_body(merchant_ids=["mrch_a1_1", "mrch_a1_2", "mrch_a1_1"])

    response = _refused(shared_client, shared_url, body)

    assert_error(response, 422, "DUPLICATE_MERCHANT_IDS")


@pytest.mark.parametrize(
    "merchant_ids",
    [
        ["mrch_a1_1", "mrch_nonexistent"],
        ["mrch_a2_1"],
        ["mrch_a1_1", "mrch_b1_1"],
        ["mrch_d_1"],
        ["MRCH_A1_1"],
    ],
    ids=["nonexistent", "sibling-org", "other-partner", "direct-org", "wrong-case"],
)
def test_merchant_not_of_the_organisation_is_invalid_merchant_ids(
    shared_client: TestClient, shared_url: str, merchant_ids: list[str]
) -> None:
    response = _refused(shared_client, shared_url, create_body(merchant_ids=merchant_ids))

    assert_error(response, 422, "INVALID_MERCHANT_IDS")


def test_merchant_of_another_reachable_organisation_is_invalid_for_a_partner_key(
    shared_client: TestClient, shared_url: str
) -> None:
    body = create_body(organisation_id="org_a2", merchant_ids=["mrch_a2_1", "mrch_a1_1"])

    with nothing_changes(shared_url):
        response = _create(shared_client, body, ADMIN_A)

    assert_error(response, 422, "INVALID_MERCHANT_IDS")


@pytest.mark.parametrize("organisation_id", ["org_nonexistent", "org_a2", "org_b1", "org_d"])
def test_organisation_missing_or_out_of_scope_is_not_found(
    shared_client: TestClient, shared_url: str, organisation_id: str
) -> None:
    response = _refused(shared_client, shared_url, create_body(organisation_id=organisation_id))

    assert_error(response, 404, "NOT_FOUND")
