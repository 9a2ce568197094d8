"""Idempotency-Key on POST and PATCH: CONTRACT 3.1 (parsing, order, replay, reuse, owners, TTL)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from tests.integrations.helpers import (
    assert_error,
    assert_validation_error,
    auth,
    create_body,
    integration_ids,
    nothing_changes,
    openapi_header_params,
    openapi_operation,
    openapi_response,
    openapi_response_headers,
)
from tests.support import api_client, query

ORG_A1 = auth("key_org_a1")
WRITE_ONLY_A1 = auth("key_write_only_a1")  # another key of org_a1: the same owner
ADMIN_A = auth("key_admin_a")
ASSIGNED_A = auth("key_assigned_a")
REVOKED_A1 = auth("key_revoked_a1")
LIST = "/v1/integrations"
ORDERS = "/v1/integrations/int_a1_orders"
STRIPE = "/v1/integrations/int_a1_stripe"
KEY = "retry-7f3a"
HEADER = "Idempotency-Key"
MIB = 1024 * 1024


@pytest.fixture(params=[10_000, 0], ids=["answers-kept-in-memory", "answers-from-the-database"])
def client(
    request: pytest.FixtureRequest, database_url: str, matrix: dict[str, Any]
) -> Iterator[TestClient]:
    """The app over a fresh matrix world, run twice: a retry reaching the process that stored
    its answer is answered from the process's memory, one reaching another process from the
    database (`idempotency_cache_size=0`); both are the contract."""
    with api_client(database_url, matrix, idempotency_cache_size=request.param) as test_client:
        yield test_client


def _send(
    client: TestClient,
    method: str,
    path: str,
    body: Any,
    *keys: str | bytes,
    headers: Mapping[str, str] = ORG_A1,
    content: bytes | None = None,
    content_type: str = "application/json",
) -> httpx.Response:
    """A request with `body` as JSON (or raw `content`) and one Idempotency-Key line per key."""
    raw = [(name.encode(), value.encode("latin-1")) for name, value in headers.items()]
    raw.append((b"Content-Type", content_type.encode()))
    raw += [(HEADER.encode(), k if isinstance(k, bytes) else k.encode("latin-1")) for k in keys]
    data = json.dumps(body).encode() if content is None else content
    return client.request(method, path, content=data, headers=raw)


def _post(client: TestClient, body: Any, *keys: str | bytes, **kw: Any) -> httpx.Response:
    return _send(client, "POST", LIST, body, *keys, **kw)


def _patch(
    client: TestClient, path: str, body: Any, *keys: str | bytes, **kw: Any
) -> httpx.Response:
    return _send(client, "PATCH", path, body, *keys, **kw)


def _stored_keys(database_url: str) -> list[tuple[Any, ...]]:
    return sorted(query(database_url, "SELECT owner, key, status_code FROM idempotency_keys"))


def _count(client: TestClient, headers: Mapping[str, str] = ORG_A1) -> int:
    value: int = client.get(LIST, headers=dict(headers)).json()["count"]
    return value


def _assert_replay_of(replay: httpx.Response, first: httpx.Response) -> None:
    """`replay` is `first` again, byte for byte, marked as replayed."""
    assert replay.status_code == first.status_code, (replay.status_code, replay.text)
    assert replay.content == first.content
    assert replay.headers.get("Location") == first.headers.get("Location")
    assert replay.headers["ETag"] == first.headers["ETag"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.headers["Content-Type"] == first.headers["Content-Type"]


def _assert_reused(response: httpx.Response) -> None:
    assert_error(response, 422, "IDEMPOTENCY_KEY_REUSED", HEADER)
    assert "Idempotent-Replayed" not in response.headers


def _assert_fresh(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert "Idempotent-Replayed" not in response.headers


# --- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bare", "quoted"),
    [("abc", '"abc"'), ('a"b', r'"a\"b"'), ("a\\b", r'"a\\b"'), ("x" * 255, '"' + "x" * 255 + '"')],
    ids=["plain", "escaped-quote", "escaped-backslash", "255-chars"],
)
def test_bare_and_quoted_key_are_the_same_key(
    client: TestClient, database_url: str, bare: str, quoted: str
) -> None:
    first = _post(client, create_body(), bare)
    with nothing_changes(database_url):
        retry = _post(client, create_body(), quoted)

    _assert_fresh(first, 201)
    _assert_replay_of(retry, first)


def test_quoted_key_first_then_bare_replays_too(client: TestClient, database_url: str) -> None:
    first = _post(client, create_body(), '"abc"')
    with nothing_changes(database_url):
        retry = _post(client, create_body(), "abc")

    _assert_fresh(first, 201)
    _assert_replay_of(retry, first)


@pytest.mark.parametrize("key", ["k", "x" * 255, "!~#$%&'*+-.^_`|0123456789AZaz:;<=>?@[]{}/(),"])
def test_key_of_1_to_255_printable_ascii_characters_is_accepted(
    client: TestClient, database_url: str, key: str
) -> None:
    response = _post(client, create_body(), key)

    _assert_fresh(response, 201)
    assert response.json()["id"] in integration_ids(database_url)


BAD_KEYS: list[str | bytes] = [
    "",
    '""',
    "x" * 256,
    '"' + "x" * 256 + '"',
    "a b",
    '"a b"',
    "a\tb",
    "a\x01b",
    "a\x7fb",
    '"a\x01b"',
    b"caf\xe9",
    "ключ".encode(),
    '"abc',
    '"',
    '"ab"c',
    r'"a\qb"',
    '"abc\\"',
]
BAD_KEY_IDS = [
    "empty",
    "empty-quoted",
    "256-chars",
    "256-chars-quoted",
    "space",
    "space-quoted",
    "tab",
    "control",
    "delete",
    "control-quoted",
    "latin-1",
    "utf-8",
    "unterminated",
    "lone-quote",
    "text-after-quote",
    "bad-escape",
    "escaped-closing-quote",
]


@pytest.mark.parametrize("key", BAD_KEYS, ids=BAD_KEY_IDS)
@pytest.mark.parametrize(("method", "path"), [("POST", LIST), ("PATCH", ORDERS)])
def test_malformed_key_is_invalid_idempotency_key(
    shared_client: TestClient, shared_url: str, key: str | bytes, method: str, path: str
) -> None:
    body = create_body() if method == "POST" else {"name": "Renamed"}
    with nothing_changes(shared_url):
        response = _send(shared_client, method, path, body, key)

    assert_error(response, 400, "INVALID_IDEMPOTENCY_KEY", HEADER)


@pytest.mark.parametrize(("first", "second"), [("abc", "abc"), ("abc", '"abc"'), ("abc", "def")])
@pytest.mark.parametrize(("method", "path"), [("POST", LIST), ("PATCH", ORDERS)])
def test_key_sent_twice_is_invalid_idempotency_key(
    shared_client: TestClient, shared_url: str, first: str, second: str, method: str, path: str
) -> None:
    body = create_body() if method == "POST" else {"name": "Renamed"}
    with nothing_changes(shared_url):
        response = _send(shared_client, method, path, body, first, second)

    assert_error(response, 400, "INVALID_IDEMPOTENCY_KEY", HEADER)


# --- order of checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer cbs_unknown"}, {"Authorization": "Basic abc"}, REVOKED_A1],
    ids=["missing", "unknown", "other-scheme", "revoked"],
)
@pytest.mark.parametrize(("method", "path"), [("POST", LIST), ("PATCH", ORDERS)])
def test_unauthorised_comes_before_a_malformed_key(
    shared_client: TestClient, shared_url: str, headers: dict[str, str], method: str, path: str
) -> None:
    with nothing_changes(shared_url):
        response = _send(shared_client, method, path, create_body(), "a b", headers=headers)

    assert_error(response, 401, "UNAUTHORISED")
    assert response.headers["WWW-Authenticate"].split()[0].lower() == "bearer"


@pytest.mark.parametrize("key_id", ["key_read_only_a1", "key_no_abilities_a1"])
@pytest.mark.parametrize(("method", "path"), [("POST", LIST), ("PATCH", ORDERS)])
def test_forbidden_comes_before_a_malformed_key(
    shared_client: TestClient, shared_url: str, key_id: str, method: str, path: str
) -> None:
    with nothing_changes(shared_url):
        response = _send(shared_client, method, path, create_body(), "", headers=auth(key_id))

    assert_error(response, 403, "FORBIDDEN")


BAD_BODIES = [
    pytest.param(b"{", "application/json", id="malformed-json"),
    pytest.param(b"[]", "application/json", id="not-an-object"),
    pytest.param(json.dumps(create_body()).encode(), "text/plain", id="unsupported-type"),
    pytest.param(json.dumps({"name": "x" * MIB}).encode(), "application/json", id="too-large"),
]


@pytest.mark.parametrize(("content", "content_type"), BAD_BODIES)
@pytest.mark.parametrize(("method", "path"), [("POST", LIST), ("PATCH", ORDERS)])
def test_malformed_key_comes_before_the_body(
    shared_client: TestClient,
    shared_url: str,
    content: bytes,
    content_type: str,
    method: str,
    path: str,
) -> None:
    with nothing_changes(shared_url):
        response = _send(
            shared_client, method, path, None, '"abc', content=content, content_type=content_type
        )

    assert_error(response, 400, "INVALID_IDEMPOTENCY_KEY", HEADER)


BODY_ERRORS = [
    pytest.param(b"{", "application/json", 400, "MALFORMED_JSON", id="malformed-json"),
    pytest.param(b"[]", "application/json", 400, "MALFORMED_JSON", id="not-an-object"),
    pytest.param(b"{}", "text/plain", 415, "UNSUPPORTED_MEDIA_TYPE", id="unsupported-type"),
    pytest.param(
        json.dumps({"name": "x" * MIB}).encode(),
        "application/json",
        413,
        "PAYLOAD_TOO_LARGE",
        id="too-large",
    ),
]


@pytest.mark.parametrize(("content", "content_type", "status", "code"), BODY_ERRORS)
def test_body_error_with_a_good_key_stores_nothing_and_the_key_then_creates(
    client: TestClient,
    database_url: str,
    content: bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    with nothing_changes(database_url):
        refused = _post(client, None, KEY, content=content, content_type=content_type)
    created = _post(client, create_body(), KEY)

    assert_error(refused, status, code)
    _assert_fresh(created, 201)
    assert created.json()["id"] in integration_ids(database_url)


@pytest.mark.parametrize(("content", "content_type", "status", "code"), BODY_ERRORS)
def test_body_error_with_a_good_key_stores_nothing_and_the_key_then_updates(
    client: TestClient,
    database_url: str,
    content: bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    with nothing_changes(database_url):
        refused = _patch(client, ORDERS, None, KEY, content=content, content_type=content_type)
    updated = _patch(client, ORDERS, {"name": "Renamed"}, KEY)

    assert_error(refused, status, code)
    _assert_fresh(updated, 200)
    assert client.get(ORDERS, headers=ORG_A1).json()["name"] == "Renamed"


def test_body_error_comes_before_a_stored_key(client: TestClient, database_url: str) -> None:
    _post(client, create_body(), KEY)

    with nothing_changes(database_url):
        response = _post(client, None, KEY, content=b"{")

    assert_error(response, 400, "MALFORMED_JSON")


# --- replay ------------------------------------------------------------------------------------


def test_post_retried_with_the_same_key_replays_the_first_answer(
    client: TestClient, database_url: str
) -> None:
    count_before = _count(client)

    first = _post(client, create_body(), KEY)
    with nothing_changes(database_url):
        retry = _post(client, create_body(), KEY)

    _assert_fresh(first, 201)
    assert first.headers["Location"] == f"/v1/integrations/{first.json()['id']}"
    assert first.headers["ETag"] == '"1"'
    _assert_replay_of(retry, first)
    assert _count(client) == count_before + 1
    assert client.get(first.headers["Location"], headers=ORG_A1).json() == first.json()


def test_post_replay_ignores_key_order_and_whitespace_of_the_body(
    client: TestClient, database_url: str
) -> None:
    body = create_body(merchant_ids=["mrch_a1_2", "mrch_a1_1"], status="DISABLED")
    reordered = json.dumps(dict(reversed(list(body.items()))), indent=4).encode()

    first = _post(client, body, KEY)
    with nothing_changes(database_url):
        retry = _post(client, None, KEY, content=b"\n " + reordered + b"\t\n")

    _assert_fresh(first, 201)
    _assert_replay_of(retry, first)


def test_post_replay_ignores_one_trailing_slash(client: TestClient, database_url: str) -> None:
    first = _send(client, "POST", LIST, create_body(), KEY)
    with nothing_changes(database_url):
        retry = _send(client, "POST", LIST + "/", create_body(), KEY)

    _assert_fresh(first, 201)
    _assert_replay_of(retry, first)


def test_post_replay_answers_the_stored_answer_after_the_integration_changed(
    client: TestClient, database_url: str
) -> None:
    first = _post(client, create_body(), KEY)
    renamed = _patch(client, first.headers["Location"], {"name": "Renamed since"})
    with nothing_changes(database_url):
        retry = _post(client, create_body(), KEY)

    assert renamed.headers["ETag"] == '"2"'
    _assert_replay_of(retry, first)
    assert (retry.json()["name"], retry.headers["ETag"]) == ("New orders feed", '"1"')


def test_replay_carries_its_own_request_id(client: TestClient) -> None:
    first = _post(client, create_body(), KEY, headers={**ORG_A1, "X-Request-Id": "first-try"})
    retry = _post(client, create_body(), KEY, headers={**ORG_A1, "X-Request-Id": "second-try"})

    _assert_replay_of(retry, first)
    assert (first.headers["X-Request-Id"], retry.headers["X-Request-Id"]) == (
        "first-try",
        "second-try",
    )
    assert retry.headers["Cache-Control"] == "no-store"


def test_post_replay_ignores_the_content_type_parameters(
    client: TestClient, database_url: str
) -> None:
    first = _post(client, create_body(), KEY)
    with nothing_changes(database_url):
        retry = _post(client, create_body(), KEY, content_type="application/json; charset=utf-8")

    _assert_fresh(first, 201)
    _assert_replay_of(retry, first)


def test_post_replayed_many_times_creates_one_integration(
    client: TestClient, database_url: str
) -> None:
    before = integration_ids(database_url)

    first = _post(client, create_body(), KEY)
    retries = [_post(client, create_body(), KEY) for _ in range(5)]

    for retry in retries:
        _assert_replay_of(retry, first)
    assert integration_ids(database_url) == before | {first.json()["id"]}


def test_patch_retried_with_the_same_key_replays_the_first_answer(
    client: TestClient, database_url: str
) -> None:
    first = _patch(client, ORDERS, {"name": "Renamed"}, KEY)
    with nothing_changes(database_url):
        retry = _patch(client, ORDERS, {"name": "Renamed"}, KEY)

    _assert_fresh(first, 200)
    assert first.headers["ETag"] == '"2"'
    assert "Location" not in first.headers
    _assert_replay_of(retry, first)
    current = client.get(ORDERS, headers=ORG_A1)
    assert current.headers["ETag"] == '"2"'
    assert current.json() == first.json()


def test_patch_replay_after_another_change_answers_the_stored_old_answer(
    client: TestClient, database_url: str
) -> None:
    first = _patch(client, ORDERS, {"name": "Renamed"}, KEY)
    between = _patch(client, ORDERS, {"status": "DISABLED"})
    with nothing_changes(database_url):
        retry = _patch(client, ORDERS, {"name": "Renamed"}, KEY)

    _assert_fresh(first, 200)
    _assert_fresh(between, 200)
    assert (first.headers["ETag"], between.headers["ETag"]) == ('"2"', '"3"')
    _assert_replay_of(retry, first)
    assert retry.json()["status"] == "ENABLED"  # the answer of then, not the state of now
    current = client.get(ORDERS, headers=ORG_A1)
    assert current.headers["ETag"] == '"3"'
    assert (current.json()["name"], current.json()["status"]) == ("Renamed", "DISABLED")


def test_patch_replay_ignores_key_order_whitespace_and_trailing_slash(
    client: TestClient, database_url: str
) -> None:
    first = _patch(client, ORDERS, {"name": "Renamed", "status": "DISABLED"}, KEY)
    content = b'{ "status" : "DISABLED",\n  "name":"Renamed" }'
    with nothing_changes(database_url):
        retry = _patch(client, ORDERS + "/", None, KEY, content=content)

    _assert_fresh(first, 200)
    _assert_replay_of(retry, first)


def test_no_op_patch_with_a_key_replays_too(client: TestClient, database_url: str) -> None:
    path = "/v1/integrations/int_a2_orders"  # already DISABLED
    first = _patch(client, path, {"status": "DISABLED"}, KEY, headers=ADMIN_A)
    with nothing_changes(database_url):
        retry = _patch(client, path, {"status": "DISABLED"}, KEY, headers=ADMIN_A)

    _assert_fresh(first, 200)
    assert first.headers["ETag"] == '"1"'
    _assert_replay_of(retry, first)


# --- reuse with another fingerprint ------------------------------------------------------------


def test_same_key_with_another_body_is_reused(client: TestClient, database_url: str) -> None:
    _post(client, create_body(), KEY)

    with nothing_changes(database_url):
        response = _post(client, create_body(name="Another name"), KEY)

    _assert_reused(response)


@pytest.mark.parametrize(
    "other",
    [
        create_body(status="ENABLED"),  # the default made explicit is still another body
        create_body(merchant_ids=["mrch_a1_1", "mrch_a1_2"]),
        create_body(name="New orders feed "),
    ],
    ids=["explicit-default", "more-merchants", "trailing-space-in-name"],
)
def test_any_other_body_is_reused(
    client: TestClient, database_url: str, other: dict[str, Any]
) -> None:
    _post(client, create_body(), KEY)

    with nothing_changes(database_url):
        response = _post(client, other, KEY)

    _assert_reused(response)


def test_post_key_reused_on_a_patch_is_reused(client: TestClient, database_url: str) -> None:
    _post(client, create_body(), KEY)

    with nothing_changes(database_url):
        response = _patch(client, ORDERS, {"name": "Renamed"}, KEY)

    _assert_reused(response)


def test_patch_key_reused_on_a_post_is_reused(client: TestClient, database_url: str) -> None:
    _patch(client, ORDERS, {"name": "Renamed"}, KEY)

    with nothing_changes(database_url):
        response = _post(client, create_body(), KEY)

    _assert_reused(response)


def test_patch_key_reused_on_another_integration_is_reused(
    client: TestClient, database_url: str
) -> None:
    other = _post(client, create_body()).json()["id"]
    _patch(client, ORDERS, {"name": "Renamed"}, KEY)

    with nothing_changes(database_url):
        response = _patch(client, f"/v1/integrations/{other}", {"name": "Renamed"}, KEY)

    _assert_reused(response)
    assert client.get(f"/v1/integrations/{other}", headers=ORG_A1).json()["name"] != "Renamed"


@pytest.mark.parametrize(
    "body",
    [
        create_body(name=""),
        create_body(type="STRIPE"),
        create_body(merchant_ids=["mrch_a1_1", "mrch_a1_1"]),
        create_body(organisation_id="org_b1", merchant_ids=["mrch_b1_1"]),
        create_body(merchant_ids=["mrch_a2_1"]),
    ],
    ids=["validation", "type", "duplicate-merchants", "unknown-organisation", "invalid-merchants"],
)
def test_stored_key_with_an_otherwise_refused_post_is_reused(
    client: TestClient, database_url: str, body: dict[str, Any]
) -> None:
    _post(client, create_body(), KEY)

    with nothing_changes(database_url):
        response = _post(client, body, KEY)

    _assert_reused(response)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (ORDERS, {"name": ""}),
        (ORDERS, {"status": "ENABLED"}),
        (ORDERS, {}),
        ("/v1/integrations/int_nonexistent", {"name": "Renamed"}),
        ("/v1/integrations/int_b1_orders", {"name": "Renamed"}),
        (STRIPE, {"name": "Renamed"}),
    ],
    ids=["validation", "enable", "missing-fields", "missing", "out-of-scope", "stripe"],
)
def test_stored_key_with_an_otherwise_refused_patch_is_reused(
    client: TestClient, database_url: str, path: str, body: dict[str, Any]
) -> None:
    _patch(client, ORDERS, {"name": "Renamed"}, KEY)

    with nothing_changes(database_url):
        response = _patch(client, path, body, KEY)

    _assert_reused(response)


# --- a failure stores nothing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (create_body(merchant_ids=["mrch_a2_1"]), 422, "INVALID_MERCHANT_IDS"),
        (create_body(merchant_ids=["mrch_a1_1", "mrch_a1_1"]), 422, "DUPLICATE_MERCHANT_IDS"),
        (create_body(organisation_id="org_b1"), 404, "NOT_FOUND"),
        (create_body(organisation_id="org_nonexistent"), 404, "NOT_FOUND"),
    ],
    ids=["invalid-merchants", "duplicate-merchants", "other-partner", "no-such-organisation"],
)
def test_failed_post_then_fixed_with_the_same_key_creates(
    client: TestClient, database_url: str, body: dict[str, Any], status: int, code: str
) -> None:
    with nothing_changes(database_url):
        failed = _post(client, body, KEY)
    fixed = _post(client, create_body(), KEY)

    assert_error(failed, status, code)
    _assert_fresh(fixed, 201)
    assert fixed.json()["id"] in integration_ids(database_url)


def test_failed_post_with_a_validation_error_then_fixed_creates(
    client: TestClient, database_url: str
) -> None:
    with nothing_changes(database_url):
        failed = _post(client, create_body(name=""), KEY)
    fixed = _post(client, create_body(), KEY)

    assert_validation_error(failed, "name")
    _assert_fresh(fixed, 201)


def test_failed_post_retried_unchanged_fails_again_not_reused(
    client: TestClient, database_url: str
) -> None:
    body = create_body(merchant_ids=["mrch_a2_1"])

    with nothing_changes(database_url):
        first = _post(client, body, KEY)
        second = _post(client, body, KEY)

    assert_error(first, 422, "INVALID_MERCHANT_IDS")
    assert_error(second, 422, "INVALID_MERCHANT_IDS")
    assert "Idempotent-Replayed" not in second.headers


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/integrations/int_nonexistent", {"name": "Renamed"}, 404, "NOT_FOUND"),
        ("/v1/integrations/int_b1_orders", {"name": "Renamed"}, 404, "NOT_FOUND"),
        (STRIPE, {"name": "Renamed"}, 422, "INVALID_INTEGRATION_TYPE"),
        (ORDERS, {}, 422, "MISSING_UPDATE_FIELDS"),
    ],
    ids=["missing", "out-of-scope", "stripe", "missing-fields"],
)
def test_failed_patch_then_fixed_with_the_same_key_updates(
    client: TestClient, database_url: str, path: str, body: dict[str, Any], status: int, code: str
) -> None:
    with nothing_changes(database_url):
        failed = _patch(client, path, body, KEY)
    fixed = _patch(client, ORDERS, {"name": "Renamed"}, KEY)

    assert_error(failed, status, code)
    _assert_fresh(fixed, 200)
    assert client.get(ORDERS, headers=ORG_A1).json()["name"] == "Renamed"


def test_failed_patch_with_a_validation_error_then_fixed_updates(
    client: TestClient, database_url: str
) -> None:
    with nothing_changes(database_url):
        failed = _patch(client, ORDERS, {"name": ""}, KEY)
    fixed = _patch(client, ORDERS, {"name": "Renamed"}, KEY)

    assert_validation_error(failed, "name")
    _assert_fresh(fixed, 200)


# --- owners ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("other", "other_owner", "other_body"),
    [
        (ADMIN_A, "partner_group:pgrp_a_admin", create_body()),
        (ADMIN_A, "partner_group:pgrp_a_admin", create_body(name="Admin's feed")),
        (
            ADMIN_A,
            "partner_group:pgrp_a_admin",
            create_body(organisation_id="org_a2", merchant_ids=["mrch_a2_1"]),
        ),
        (ASSIGNED_A, "partner_group:pgrp_a_assigned", create_body()),
    ],
    ids=["admin-same-body", "admin-other-name", "admin-other-organisation", "desk-same-body"],
)
def test_same_key_string_of_two_owners_are_two_keys(
    client: TestClient,
    database_url: str,
    other: dict[str, str],
    other_owner: str,
    other_body: dict[str, Any],
) -> None:
    before = integration_ids(database_url)

    mine = _post(client, create_body(), KEY)
    theirs = _post(client, other_body, KEY, headers=other)

    _assert_fresh(mine, 201)
    _assert_fresh(theirs, 201)
    assert mine.json()["id"] != theirs.json()["id"]
    assert integration_ids(database_url) == before | {mine.json()["id"], theirs.json()["id"]}
    assert [row[0] for row in _stored_keys(database_url)] == sorted(
        ["organisation:org_a1", other_owner]
    )
    _assert_replay_of(_post(client, create_body(), KEY), mine)
    _assert_replay_of(_post(client, other_body, KEY, headers=other), theirs)


def test_same_key_string_of_two_partner_groups_patching_one_integration_are_two_keys(
    client: TestClient,
) -> None:
    mine = _patch(client, ORDERS, {"name": "By admin"}, KEY, headers=ADMIN_A)
    theirs = _patch(client, ORDERS, {"name": "By desk"}, KEY, headers=ASSIGNED_A)

    _assert_fresh(mine, 200)
    _assert_fresh(theirs, 200)
    assert (mine.headers["ETag"], theirs.headers["ETag"]) == ('"2"', '"3"')
    assert client.get(ORDERS, headers=ORG_A1).json()["name"] == "By desk"


def test_two_api_keys_of_one_organisation_share_their_keys(
    client: TestClient, database_url: str
) -> None:
    first = _post(client, create_body(), KEY)
    with nothing_changes(database_url):
        replay = _post(client, create_body(), KEY, headers=WRITE_ONLY_A1)
        reused = _post(client, create_body(name="Other"), KEY, headers=WRITE_ONLY_A1)

    _assert_fresh(first, 201)
    _assert_replay_of(replay, first)
    _assert_reused(reused)


def test_key_owned_by_another_organisation_does_not_leak_its_answer(
    client: TestClient, database_url: str
) -> None:
    """org_d's key string is unrelated to org_a1's: no replay, no reuse, no hint it exists."""
    org_d = auth("key_org_d")
    body = create_body(organisation_id="org_d", merchant_ids=["mrch_d_1"])
    theirs = _post(client, body, KEY, headers=org_d)

    with nothing_changes(database_url):
        mine = _post(client, body, KEY)

    _assert_fresh(theirs, 201)
    assert_error(mine, 404, "NOT_FOUND")


# --- retention ---------------------------------------------------------------------------------


def test_key_past_its_ttl_is_new_even_before_it_is_purged(
    database_url: str, matrix: dict[str, Any]
) -> None:
    settings = {"idempotency_ttl": 1.0, "idempotency_purge_interval": 3600.0}
    with api_client(database_url, matrix, **settings) as client:
        first = _post(client, create_body(), KEY)
        time.sleep(1.3)
        other_body = _post(client, create_body(name="After the TTL"), KEY)
        same_body = _post(client, create_body(), "another-key")
        time.sleep(1.3)
        same_again = _post(client, create_body(), "another-key")

    _assert_fresh(first, 201)
    _assert_fresh(other_body, 201)
    _assert_fresh(same_body, 201)
    _assert_fresh(same_again, 201)
    assert same_again.json()["id"] != same_body.json()["id"]
    created = {r.json()["id"] for r in (first, other_body, same_body, same_again)}
    assert created <= integration_ids(database_url)
    assert len(created) == 4


def test_key_within_its_ttl_is_still_replayed(database_url: str, matrix: dict[str, Any]) -> None:
    with api_client(database_url, matrix, idempotency_ttl=30.0) as client:
        first = _post(client, create_body(), KEY)
        retry = _post(client, create_body(), KEY)
        reused = _post(client, create_body(name="Other"), KEY)

    _assert_replay_of(retry, first)
    _assert_reused(reused)


def test_expired_keys_are_purged_without_a_request(
    database_url: str, matrix: dict[str, Any]
) -> None:
    settings = {"idempotency_ttl": 2.0, "idempotency_purge_interval": 0.2}
    with api_client(database_url, matrix, **settings) as client:
        _post(client, create_body(), KEY)
        assert len(_stored_keys(database_url)) == 1
        deadline = time.monotonic() + 10
        while _stored_keys(database_url) and time.monotonic() < deadline:
            time.sleep(0.1)

        assert _stored_keys(database_url) == []


# --- without a key -----------------------------------------------------------------------------


def test_unkeyed_posts_create_twice_and_store_no_key(client: TestClient, database_url: str) -> None:
    first = _post(client, create_body())
    second = _post(client, create_body())

    _assert_fresh(first, 201)
    _assert_fresh(second, 201)
    assert first.json()["id"] != second.json()["id"]
    assert first.headers["ETag"] == second.headers["ETag"] == '"1"'
    assert _stored_keys(database_url) == []


def test_unkeyed_patches_apply_each_time_and_store_no_key(
    client: TestClient, database_url: str
) -> None:
    first = _patch(client, ORDERS, {"name": "Renamed"})
    second = _patch(client, ORDERS, {"status": "DISABLED"})

    _assert_fresh(first, 200)
    _assert_fresh(second, 200)
    assert (first.headers["ETag"], second.headers["ETag"]) == ('"2"', '"3"')
    assert _stored_keys(database_url) == []


# --- OpenAPI -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "success"),
    [("post", LIST, "201"), ("patch", "/v1/integrations/{integration_id}", "200")],
)
def test_openapi_declares_idempotency_on_post_and_patch(
    shared_client: TestClient, method: str, path: str, success: str
) -> None:
    document = shared_client.get("/v1/openapi.json").json()
    operation = openapi_operation(document, method, path)

    assert "idempotency-key" in openapi_header_params(document, operation)
    ok = openapi_response(document, operation, success)
    assert "idempotent-replayed" in openapi_response_headers(ok)
    in_use = openapi_response(document, operation, "409")
    assert "IDEMPOTENCY_KEY_IN_USE" in json.dumps(in_use)
    assert "retry-after" in openapi_response_headers(in_use)
    assert "IDEMPOTENCY_KEY_REUSED" in json.dumps(openapi_response(document, operation, "422"))
    assert "INVALID_IDEMPOTENCY_KEY" in json.dumps(openapi_response(document, operation, "400"))


@pytest.mark.parametrize("path", [LIST, "/v1/integrations/{integration_id}"])
def test_openapi_declares_no_idempotency_key_on_get(shared_client: TestClient, path: str) -> None:
    document = shared_client.get("/v1/openapi.json").json()

    assert "idempotency-key" not in openapi_header_params(
        document, openapi_operation(document, "get", path)
    )
