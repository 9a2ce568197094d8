"""The error envelope and HTTP details of every answer: CONTRACT 1.1, 1.2, 1.5 and 1.11."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.integrations.helpers import (
    assert_error,
    auth,
    create_body,
    error_entries,
    nothing_changes,
)

ORG_A1 = auth("key_org_a1")
ORG_A1_SECRET = ORG_A1["Authorization"].removeprefix("Bearer ")
LIST = "/v1/integrations"
ONE = "/v1/integrations/int_a1_orders"
MIB = 1024 * 1024


def _json_post(client: TestClient, url: str, content: bytes, method: str = "POST") -> Any:
    headers = {**ORG_A1, "Content-Type": "application/json"}
    return client.request(method, url, content=content, headers=headers)


# --- routing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v1/nope",
        "/v1/integrations/int_a1_orders/merchants",
        "/",
        "/v2/integrations",
    ],
)
def test_unknown_path_is_not_found_in_the_envelope(shared_client: TestClient, path: str) -> None:
    response = shared_client.get(path, headers=ORG_A1)

    assert_error(response, 404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", LIST, {"GET", "POST"}),
        ("PUT", LIST, {"GET", "POST"}),
        ("PATCH", LIST, {"GET", "POST"}),
        ("DELETE", ONE, {"GET", "PATCH"}),
        ("PUT", ONE, {"GET", "PATCH"}),
        ("POST", ONE, {"GET", "PATCH"}),
    ],
)
def test_known_path_with_another_method_is_405_with_allow(
    shared_client: TestClient, shared_url: str, method: str, path: str, allowed: set[str]
) -> None:
    with nothing_changes(shared_url):
        response = shared_client.request(method, path, json={"name": "x"}, headers=ORG_A1)

    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    allow = {m.strip().upper() for m in response.headers["Allow"].split(",")}
    assert allowed <= allow <= allowed | {"HEAD", "OPTIONS"}


@pytest.mark.parametrize("path", [LIST, ONE])
def test_trailing_slash_answers_the_same_without_redirect_on_get(
    shared_client: TestClient, path: str
) -> None:
    plain = shared_client.get(path, headers=ORG_A1, follow_redirects=False)
    slashed = shared_client.get(path + "/", headers=ORG_A1, follow_redirects=False)

    assert plain.status_code == slashed.status_code == 200
    assert plain.json() == slashed.json()


def test_trailing_slash_post_creates_without_redirect(client: TestClient) -> None:
    response = client.post(LIST + "/", json=create_body(), headers=ORG_A1, follow_redirects=False)

    assert response.status_code == 201, response.text
    assert response.headers["Location"] == f"/v1/integrations/{response.json()['id']}"


def test_trailing_slash_patch_updates_without_redirect(client: TestClient) -> None:
    response = client.patch(
        ONE + "/", json={"name": "Slashed"}, headers=ORG_A1, follow_redirects=False
    )

    assert response.status_code == 200, response.text
    assert client.get(ONE, headers=ORG_A1).json()["name"] == "Slashed"


def test_trailing_slash_errors_are_the_same_errors(shared_client: TestClient) -> None:
    plain = shared_client.get("/v1/integrations/int_nonexistent", headers=ORG_A1)
    slashed = shared_client.get("/v1/integrations/int_nonexistent/", headers=ORG_A1)

    assert_error(slashed, 404, "NOT_FOUND")
    assert slashed.json() == plain.json()


# --- bodies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx", "text/json"],
)
@pytest.mark.parametrize(("method", "path"), [("POST", LIST), ("PATCH", ONE)])
def test_body_that_is_not_application_json_is_415(
    shared_client: TestClient, shared_url: str, content_type: str | None, method: str, path: str
) -> None:
    body = json.dumps(create_body() if method == "POST" else {"name": "x"}).encode()
    headers = dict(ORG_A1)
    if content_type is not None:
        headers["Content-Type"] = content_type
    with nothing_changes(shared_url):
        response = shared_client.request(method, path, content=body, headers=headers)

    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "application/json;charset=UTF-8"]
)
def test_json_with_charset_parameter_is_accepted(client: TestClient, content_type: str) -> None:
    response = client.post(
        LIST,
        content=json.dumps(create_body()).encode(),
        headers={**ORG_A1, "Content-Type": content_type},
    )

    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b"not json",
        b"{'name': 'x'}",
        b"[]",
        b"[1, 2]",
        b'"text"',
        b"42",
        b"null",
        b"true",
    ],
    ids=[
        "empty",
        "open-brace",
        "words",
        "single-quotes",
        "empty-array",
        "array",
        "string",
        "number",
        "null",
        "true",
    ],
)
@pytest.mark.parametrize(("method", "path"), [("POST", LIST), ("PATCH", ONE)])
def test_body_that_is_not_a_json_object_is_malformed_json(
    shared_client: TestClient, shared_url: str, content: bytes, method: str, path: str
) -> None:
    with nothing_changes(shared_url):
        response = _json_post(shared_client, path, content, method)

    assert_error(response, 400, "MALFORMED_JSON")


@pytest.mark.parametrize(("method", "path"), [("POST", LIST), ("PATCH", ONE)])
def test_body_over_one_mib_is_413(
    shared_client: TestClient, shared_url: str, method: str, path: str
) -> None:
    content = json.dumps({"name": "x" * MIB}).encode()
    assert len(content) > MIB

    with nothing_changes(shared_url):
        response = _json_post(shared_client, path, content, method)

    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


def test_body_just_under_one_mib_is_read_and_validated(
    shared_client: TestClient, shared_url: str
) -> None:
    content = json.dumps(create_body(name="x" * (MIB - 200))).encode()
    assert len(content) <= MIB

    with nothing_changes(shared_url):
        response = _json_post(shared_client, LIST, content)

    assert response.status_code == 422, response.text
    assert [(e["code"], e.get("field")) for e in error_entries(response)] == [
        ("VALIDATION_ERROR", "name")
    ]


# --- authentication ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Basic {ORG_A1_SECRET}",
        f"Token {ORG_A1_SECRET}",
        ORG_A1_SECRET,
        "Bearer cbs_unknown_key_0000000000000000000",
        f"Bearer {ORG_A1_SECRET}x",
        f"Bearer {ORG_A1_SECRET[:-1]}",
        "Bearer cbs_test_revoked_a1_00000000000000000",
    ],
    ids=[
        "missing",
        "empty",
        "scheme-only",
        "empty-key",
        "basic",
        "token",
        "no-scheme",
        "unknown",
        "longer",
        "shorter",
        "revoked",
    ],
)
@pytest.mark.parametrize(
    ("method", "path"), [("GET", LIST), ("GET", ONE), ("POST", LIST), ("PATCH", ONE)]
)
def test_unusable_credentials_are_401_with_www_authenticate_bearer(
    shared_client: TestClient, shared_url: str, authorization: str | None, method: str, path: str
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    body = create_body() if method == "POST" else {"name": "x"}
    with nothing_changes(shared_url):
        response = shared_client.request(
            method, path, json=body if method != "GET" else None, headers=headers
        )

    assert_error(response, 401, "UNAUTHORISED")
    assert response.headers["WWW-Authenticate"].split()[0].lower() == "bearer"


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
def test_scheme_word_is_case_insensitive(shared_client: TestClient, scheme: str) -> None:
    response = shared_client.get(LIST, headers={"Authorization": f"{scheme} {ORG_A1_SECRET}"})

    assert response.status_code == 200, response.text
    assert response.json()["count"] == 2


# --- headers on every answer -------------------------------------------------------------------


def _every_kind_of_answer(client: TestClient) -> list[Any]:
    return [
        client.get(LIST, headers=ORG_A1),
        client.get(ONE, headers=ORG_A1),
        client.post(LIST, json=create_body(), headers=ORG_A1),
        client.patch(ONE, json={"name": "y"}, headers=ORG_A1),
        client.get(LIST),
        client.get(LIST, headers=auth("key_write_only_a1")),
        client.get("/v1/integrations/int_nonexistent", headers=ORG_A1),
        client.get("/v1/nope", headers=ORG_A1),
        client.delete(ONE, headers=ORG_A1),
        client.post(LIST, content=b"x", headers={**ORG_A1, "Content-Type": "text/plain"}),
        client.post(LIST, content=b"{", headers={**ORG_A1, "Content-Type": "application/json"}),
        client.post(LIST, json={}, headers=ORG_A1),
        client.get(f"{LIST}?limit=0", headers=ORG_A1),
        client.get("/healthz"),
        client.get("/readyz"),
        client.get("/v1/openapi.json"),
    ]


def test_every_answer_carries_a_request_id(client: TestClient) -> None:
    responses = _every_kind_of_answer(client)

    ids = [r.headers.get("X-Request-Id") for r in responses]
    assert all(ids), [(r.request.url, r.status_code) for r in responses]
    assert len(set(ids)) == len(ids)


def test_no_error_ever_has_a_detail_key(client: TestClient) -> None:
    for response in _every_kind_of_answer(client):
        if response.status_code >= 400:
            error_entries(response)
            assert "detail" not in response.text, response.text


def test_a_sane_client_request_id_is_echoed(shared_client: TestClient) -> None:
    for headers in ({}, ORG_A1):
        response = shared_client.get(LIST, headers={**headers, "X-Request-Id": "req-abc_123.XYZ"})
        assert response.headers["X-Request-Id"] == "req-abc_123.XYZ"


@pytest.mark.parametrize(
    "request_id",
    ["x" * 1000, "<script>alert(1)</script>", "a b c", ""],
    ids=[
        "long",
        "html",
        "spaces",
        "empty",
    ],
)
def test_an_insane_client_request_id_is_replaced(
    shared_client: TestClient, request_id: str
) -> None:
    response = shared_client.get(LIST, headers={**ORG_A1, "X-Request-Id": request_id})

    assert response.status_code == 200
    assert response.headers["X-Request-Id"]
    assert response.headers["X-Request-Id"] != request_id


def test_tenant_data_is_never_cached(client: TestClient) -> None:
    created = client.post(LIST, json=create_body(), headers=ORG_A1)
    answers = [
        client.get(LIST, headers=ORG_A1),
        client.get(ONE, headers=ORG_A1),
        created,
        client.patch(ONE, json={"name": "z"}, headers=ORG_A1),
    ]

    for response in answers:
        assert response.status_code in (200, 201)
        assert "no-store" in response.headers["Cache-Control"]
