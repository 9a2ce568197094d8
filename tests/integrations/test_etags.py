"""Versions, ETag, If-None-Match and If-Match: CONTRACT 3.2 (and its meeting with 3.1)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from tests.integrations.helpers import (
    INTEGRATION_KEYS,
    assert_error,
    assert_validation_error,
    auth,
    create_body,
    nothing_changes,
    openapi_header_params,
    openapi_operation,
    openapi_response,
    openapi_response_headers,
    world,
    world_integration,
)

MATRIX = world("matrix")
ORG_A1 = auth("key_org_a1")
ADMIN_A = auth("key_admin_a")
LIST = "/v1/integrations"
ORDERS = "/v1/integrations/int_a1_orders"
STRIPE = "/v1/integrations/int_a1_stripe"
MISSING = "/v1/integrations/int_nonexistent"
OUT_OF_SCOPE = "/v1/integrations/int_b1_orders"  # exists, another partner's


def _with(name: str, value: str, headers: Mapping[str, str] = ORG_A1) -> list[tuple[str, str]]:
    """The key's request headers plus one more."""
    return [*headers.items(), (name, value)]


def _patch(
    client: TestClient,
    path: str,
    body: Any,
    *if_match: str,
    headers: Mapping[str, str] = ORG_A1,
    key: str | None = None,
) -> httpx.Response:
    """A PATCH with one If-Match line per value given (several lines are one list)."""
    raw = [*headers.items(), ("Content-Type", "application/json")]
    raw += [("If-Match", value) for value in if_match]
    if key is not None:
        raw.append(("Idempotency-Key", key))
    return client.request("PATCH", path, content=json.dumps(body).encode(), headers=raw)


def _etag(client: TestClient, path: str = ORDERS, headers: Mapping[str, str] = ORG_A1) -> str:
    response = client.get(path, headers=dict(headers))
    assert response.status_code == 200, response.text
    value: str = response.headers["ETag"]
    return value


def _assert_not_modified(response: httpx.Response, etag: str) -> None:
    assert response.status_code == 304, (response.status_code, response.text)
    assert response.content == b""
    assert response.headers["ETag"] == etag
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Request-Id"]
    assert "Content-Type" not in response.headers
    assert "Content-Length" not in response.headers


# --- versions and ETag -------------------------------------------------------------------------


def test_created_integration_is_version_1_on_post_get_and_head(client: TestClient) -> None:
    created = client.post(LIST, json=create_body(), headers=ORG_A1)
    location = created.headers["Location"]

    got = client.get(location, headers=ORG_A1)
    head = client.head(location, headers=ORG_A1)

    assert created.status_code == 201, created.text
    assert created.headers["ETag"] == got.headers["ETag"] == head.headers["ETag"] == '"1"'
    assert got.status_code == head.status_code == 200
    assert head.content == b""


KEY_OF_ORGANISATION = {
    "org_a1": ADMIN_A,
    "org_a2": ADMIN_A,
    "org_b1": auth("key_admin_b"),
    "org_d": auth("key_org_d"),
}


@pytest.mark.parametrize(
    ("integration_id", "organisation_id"),
    [(i["id"], i["organisation_id"]) for i in MATRIX["integrations"]],
)
def test_every_world_integration_starts_at_version_1(
    shared_client: TestClient, integration_id: str, organisation_id: str
) -> None:
    key = KEY_OF_ORGANISATION[organisation_id]

    response = shared_client.get(f"/v1/integrations/{integration_id}", headers=key)

    assert response.status_code == 200, response.text
    assert response.headers["ETag"] == '"1"'
    assert response.json() == world_integration(MATRIX, integration_id)


def test_each_changing_patch_adds_one_to_the_version(client: TestClient) -> None:
    renamed = _patch(client, ORDERS, {"name": "Renamed"})
    disabled = _patch(client, ORDERS, {"status": "DISABLED"})
    both = _patch(client, ORDERS, {"name": "Renamed again", "status": "DISABLED"})

    assert [r.status_code for r in (renamed, disabled, both)] == [200, 200, 200]
    assert [r.headers["ETag"] for r in (renamed, disabled, both)] == ['"2"', '"3"', '"4"']
    assert _etag(client) == '"4"'


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/v1/integrations/int_a2_orders", {"status": "DISABLED"}, ADMIN_A),
        (ORDERS, {"name": "A1 orders"}, ORG_A1),
        (
            "/v1/integrations/int_a2_orders",
            {"name": "A2 orders", "status": "DISABLED"},
            ADMIN_A,
        ),
    ],
    ids=["disable-disabled", "same-name", "same-name-and-status"],
)
def test_patch_that_changes_nothing_keeps_the_version(
    client: TestClient, path: str, body: dict[str, str], headers: dict[str, str]
) -> None:
    response = _patch(client, path, body, headers=headers)

    assert response.status_code == 200, response.text
    assert response.headers["ETag"] == '"1"'
    assert _etag(client, path, headers) == '"1"'


def test_repeating_a_change_keeps_the_version_it_made(client: TestClient) -> None:
    first = _patch(client, ORDERS, {"name": "Renamed", "status": "DISABLED"})
    again = _patch(client, ORDERS, {"name": "Renamed", "status": "DISABLED"})

    assert (first.headers["ETag"], again.headers["ETag"]) == ('"2"', '"2"')
    assert again.json() == first.json()


def test_representation_carries_no_version(client: TestClient) -> None:
    _patch(client, ORDERS, {"name": "Renamed"})

    one = client.get(ORDERS, headers=ORG_A1)
    page = client.get(LIST, headers=ORG_A1)

    assert list(one.json()) == list(INTEGRATION_KEYS)
    assert set(page.json()) == {"items", "count"}
    assert [list(item) for item in page.json()["items"]] == [list(INTEGRATION_KEYS)] * len(
        page.json()["items"]
    )
    assert "ETag" not in page.headers


# --- If-None-Match -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "if_none_match",
    ['"1"', "*", 'W/"1"', '"7", "1"', '"7",W/"1"', '"0" , "1" , "2"'],
    ids=["current", "star", "weak-current", "list", "list-weak", "spaced-list"],
)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_if_none_match_of_the_current_tag_is_304(
    shared_client: TestClient, shared_url: str, method: str, if_none_match: str
) -> None:
    with nothing_changes(shared_url):
        response = shared_client.request(
            method, ORDERS, headers=_with("If-None-Match", if_none_match)
        )

    _assert_not_modified(response, '"1"')


@pytest.mark.parametrize(
    "if_none_match",
    ['"2"', 'W/"2"', '"0", "2"', "1", '"1', "W/1", "garbage", '"a"'],
    ids=[
        "other",
        "weak-other",
        "list-without",
        "unquoted",
        "unterminated",
        "weak-unquoted",
        "words",
        "not-a-number",
    ],
)
def test_if_none_match_of_no_current_tag_or_malformed_is_200(
    shared_client: TestClient, if_none_match: str
) -> None:
    response = shared_client.get(ORDERS, headers=_with("If-None-Match", if_none_match))

    assert response.status_code == 200, response.text
    assert response.headers["ETag"] == '"1"'
    assert response.json() == world_integration(MATRIX, "int_a1_orders")


def test_if_none_match_of_an_old_tag_is_200_with_the_new_one(client: TestClient) -> None:
    _patch(client, ORDERS, {"name": "Renamed"})

    stale = client.get(ORDERS, headers=_with("If-None-Match", '"1"'))
    current = client.get(ORDERS, headers=_with("If-None-Match", '"2"'))

    assert stale.status_code == 200, stale.text
    assert stale.headers["ETag"] == '"2"'
    assert stale.json()["name"] == "Renamed"
    _assert_not_modified(current, '"2"')


@pytest.mark.parametrize("path", [MISSING, OUT_OF_SCOPE, "/v1/integrations/int_a2_orders"])
@pytest.mark.parametrize("if_none_match", ["*", '"1"'])
def test_if_none_match_on_a_missing_or_out_of_scope_integration_is_404(
    shared_client: TestClient, path: str, if_none_match: str
) -> None:
    response = shared_client.get(path, headers=_with("If-None-Match", if_none_match))

    assert_error(response, 404, "NOT_FOUND")
    assert "ETag" not in response.headers


def test_if_none_match_is_ignored_on_the_list(shared_client: TestClient) -> None:
    response = shared_client.get(LIST, headers=_with("If-None-Match", "*"))

    assert response.status_code == 200, response.text
    assert response.json()["count"] == 2


def test_if_none_match_is_ignored_on_patch(client: TestClient) -> None:
    response = client.patch(ORDERS, json={"name": "Renamed"}, headers=_with("If-None-Match", "*"))

    assert response.status_code == 200, response.text
    assert response.headers["ETag"] == '"2"'
    assert client.get(ORDERS, headers=ORG_A1).json()["name"] == "Renamed"


@pytest.mark.parametrize("header", ["If-None-Match", "If-Match"])
def test_conditions_are_ignored_on_post(client: TestClient, header: str) -> None:
    response = client.post(LIST, json=create_body(), headers=_with(header, '"99"'))

    assert response.status_code == 201, response.text
    assert response.headers["ETag"] == '"1"'


# --- If-Match ----------------------------------------------------------------------------------


def test_if_match_of_an_old_tag_is_412_with_the_current_tag_and_changes_nothing(
    client: TestClient, database_url: str
) -> None:
    renamed = _patch(client, ORDERS, {"name": "Renamed"})
    before = client.get(ORDERS, headers=ORG_A1)

    with nothing_changes(database_url):
        response = _patch(client, ORDERS, {"name": "Lost update"}, '"1"')

    assert renamed.headers["ETag"] == '"2"'
    assert_error(response, 412, "PRECONDITION_FAILED")
    assert response.headers["ETag"] == '"2"'
    after = client.get(ORDERS, headers=ORG_A1)
    assert after.headers["ETag"] == '"2"'
    assert after.json() == before.json()


@pytest.mark.parametrize(
    "if_match",
    [("*",), ('"1"',), ('"7", "1"',), ('"7","1"',), ('"7"', '"1"')],
    ids=["star", "current", "list", "tight-list", "two-lines"],
)
def test_if_match_of_the_current_tag_applies_the_patch(
    client: TestClient, if_match: tuple[str, ...]
) -> None:
    response = _patch(client, ORDERS, {"name": "Renamed"}, *if_match)

    assert response.status_code == 200, response.text
    assert response.headers["ETag"] == '"2"'
    assert response.json() == {**world_integration(MATRIX, "int_a1_orders"), "name": "Renamed"}
    assert client.get(ORDERS, headers=ORG_A1).json()["name"] == "Renamed"


@pytest.mark.parametrize(
    "if_match",
    [('"2"',), ('W/"1"',), ('"7", W/"1"',), ("1",), ('"1',), ("W/1",), ("'1'",), ('"0"', '"2"')],
    ids=[
        "other",
        "weak-current",
        "list-weak-current",
        "unquoted",
        "unterminated",
        "weak-unquoted",
        "single-quoted",
        "two-lines-without",
    ],
)
def test_if_match_without_a_strong_current_tag_is_412(
    shared_client: TestClient, shared_url: str, if_match: tuple[str, ...]
) -> None:
    with nothing_changes(shared_url):
        response = _patch(shared_client, ORDERS, {"name": "Renamed"}, *if_match)

    assert_error(response, 412, "PRECONDITION_FAILED")
    assert response.headers["ETag"] == '"1"'
    assert shared_client.get(ORDERS, headers=ORG_A1).json()["name"] == "A1 orders"


def test_no_op_patch_with_an_old_tag_is_412_too(client: TestClient, database_url: str) -> None:
    _patch(client, ORDERS, {"name": "Renamed"})

    with nothing_changes(database_url):
        response = _patch(client, ORDERS, {"name": "Renamed"}, '"1"')

    assert_error(response, 412, "PRECONDITION_FAILED")
    assert response.headers["ETag"] == '"2"'


def test_two_editors_with_the_same_tag_only_the_first_wins(client: TestClient) -> None:
    tag = _etag(client)

    first = _patch(client, ORDERS, {"name": "First editor"}, tag)
    second = _patch(client, ORDERS, {"name": "Second editor"}, tag, headers=ADMIN_A)

    assert first.status_code == 200, first.text
    assert_error(second, 412, "PRECONDITION_FAILED")
    assert second.headers["ETag"] == first.headers["ETag"] == '"2"'
    assert client.get(ORDERS, headers=ORG_A1).json()["name"] == "First editor"


@pytest.mark.parametrize("path", [MISSING, OUT_OF_SCOPE, "/v1/integrations/int_a2_orders"])
@pytest.mark.parametrize("if_match", ['"99"', 'W/"1"', "1"])
def test_missing_or_out_of_scope_integration_is_404_before_412(
    shared_client: TestClient, shared_url: str, path: str, if_match: str
) -> None:
    with nothing_changes(shared_url):
        response = _patch(shared_client, path, {"name": "Renamed"}, if_match)

    assert_error(response, 404, "NOT_FOUND")
    assert "ETag" not in response.headers


def test_stale_if_match_on_a_non_custom_orders_integration_is_412_before_its_type(
    shared_client: TestClient, shared_url: str
) -> None:
    with nothing_changes(shared_url):
        response = _patch(shared_client, STRIPE, {"name": "Renamed"}, '"2"')

    assert_error(response, 412, "PRECONDITION_FAILED")
    assert response.headers["ETag"] == '"1"'


@pytest.mark.parametrize("if_match", ['"1"', "*"])
def test_current_if_match_on_a_non_custom_orders_integration_is_invalid_type(
    shared_client: TestClient, shared_url: str, if_match: str
) -> None:
    with nothing_changes(shared_url):
        response = _patch(shared_client, STRIPE, {"name": "Renamed"}, if_match)

    assert_error(response, 422, "INVALID_INTEGRATION_TYPE")


@pytest.mark.parametrize(
    ("body", "fields"),
    [({"name": ""}, ("name",)), ({"status": "ENABLED"}, ("status",)), ({"type": "X"}, ("type",))],
)
def test_validation_error_comes_before_412(
    shared_client: TestClient, shared_url: str, body: dict[str, str], fields: tuple[str, ...]
) -> None:
    with nothing_changes(shared_url):
        response = _patch(shared_client, ORDERS, body, '"99"')

    assert_validation_error(response, *fields)


def test_missing_update_fields_comes_before_412(shared_client: TestClient, shared_url: str) -> None:
    with nothing_changes(shared_url):
        response = _patch(shared_client, ORDERS, {}, '"99"')

    assert_error(response, 422, "MISSING_UPDATE_FIELDS")


# --- with an Idempotency-Key -------------------------------------------------------------------


def test_conditional_patch_retried_after_it_succeeded_replays_instead_of_412(
    client: TestClient, database_url: str
) -> None:
    first = _patch(client, ORDERS, {"name": "Renamed"}, '"1"', key="rename-once")
    with nothing_changes(database_url):
        retry = _patch(client, ORDERS, {"name": "Renamed"}, '"1"', key="rename-once")

    assert first.status_code == 200, first.text
    assert "Idempotent-Replayed" not in first.headers
    assert retry.status_code == 200, retry.text
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.content == first.content
    assert retry.headers["ETag"] == first.headers["ETag"] == '"2"'


def test_conditional_patch_that_failed_412_stores_nothing(client: TestClient) -> None:
    _patch(client, ORDERS, {"status": "DISABLED"})

    failed = _patch(client, ORDERS, {"name": "Renamed"}, '"1"', key="rename-once")
    fixed = _patch(client, ORDERS, {"name": "Renamed"}, '"2"', key="rename-once")

    assert_error(failed, 412, "PRECONDITION_FAILED")
    assert fixed.status_code == 200, fixed.text
    assert "Idempotent-Replayed" not in fixed.headers
    assert fixed.headers["ETag"] == '"3"'


def test_another_key_with_the_old_tag_is_412(client: TestClient, database_url: str) -> None:
    _patch(client, ORDERS, {"name": "Renamed"}, '"1"', key="rename-once")

    with nothing_changes(database_url):
        response = _patch(client, ORDERS, {"name": "Renamed"}, '"1"', key="rename-twice")

    assert_error(response, 412, "PRECONDITION_FAILED")
    assert response.headers["ETag"] == '"2"'


# --- OpenAPI -----------------------------------------------------------------------------------

ONE_PATH = "/v1/integrations/{integration_id}"


@pytest.fixture(scope="module")
def document(shared_client: TestClient) -> dict[str, Any]:
    value: dict[str, Any] = shared_client.get("/v1/openapi.json").json()
    return value


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("get", ONE_PATH, "200"), ("post", LIST, "201"), ("patch", ONE_PATH, "200")],
)
def test_openapi_declares_the_etag_of_each_answer_with_one_integration(
    document: dict[str, Any], method: str, path: str, status: str
) -> None:
    response = openapi_response(document, openapi_operation(document, method, path), status)

    assert "etag" in openapi_response_headers(response)


def test_openapi_declares_no_etag_on_the_list(document: dict[str, Any]) -> None:
    response = openapi_response(document, openapi_operation(document, "get", LIST), "200")

    assert "etag" not in openapi_response_headers(response)


def test_openapi_declares_if_none_match_and_304_on_get_one(document: dict[str, Any]) -> None:
    operation = openapi_operation(document, "get", ONE_PATH)

    assert "if-none-match" in openapi_header_params(document, operation)
    not_modified = openapi_response(document, operation, "304")
    assert "etag" in openapi_response_headers(not_modified)
    assert "content" not in not_modified


def test_openapi_declares_if_match_and_412_on_patch(document: dict[str, Any]) -> None:
    operation = openapi_operation(document, "patch", ONE_PATH)

    assert "if-match" in openapi_header_params(document, operation)
    failed = openapi_response(document, operation, "412")
    assert "PRECONDITION_FAILED" in json.dumps(failed)
    assert "etag" in openapi_response_headers(failed)
