"""Ambiguous input is refused, not guessed at: a repeated credential or media-type header, a
body in a content coding or charset the service does not decode, an offset past the
documented maximum; and a hostile body's problems are listed up to a cap.

Through the app on both databases, and over a raw socket to a real `cbstop serve` for what
an HTTP client library will not send.
"""

from __future__ import annotations

import gzip
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from cbstop.web.http import MAX_PROBLEMS
from cbstop.world.loader import load_world
from tests.integrations.helpers import (
    assert_error,
    auth,
    create_body,
    error_entries,
    nothing_changes,
    secret,
    world,
)
from tests.reliability.processes import Server, running
from tests.support import TEST_KEY_SECRET

ORG_A1 = auth("key_org_a1")
KEY = secret(world("matrix"), "key_org_a1")
OTHER_KEY = secret(world("matrix"), "key_admin_a")
LIST = "/v1/integrations"
ONE = "/v1/integrations/int_a1_orders"
JSON = {**ORG_A1, "Content-Type": "application/json"}


def _body(method: str) -> bytes:
    return json.dumps(create_body() if method == "POST" else {"name": "renamed"}).encode()


# --- repeated headers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        (f"Bearer {KEY}", "Bearer junk"),
        ("Bearer junk", f"Bearer {KEY}"),
        (f"Bearer {KEY}", f"Bearer {KEY}"),
        (f"Bearer {KEY}", f"Bearer {OTHER_KEY}"),
    ],
    ids=["valid-then-junk", "junk-then-valid", "same-twice", "two-valid-keys"],
)
@pytest.mark.parametrize(("method", "path"), [("GET", ONE), ("PATCH", ONE), ("POST", LIST)])
def test_a_repeated_authorization_header_is_401(
    shared_client: TestClient, shared_url: str, values: tuple[str, str], method: str, path: str
) -> None:
    headers = [("authorization", v) for v in values] + [("content-type", "application/json")]
    with nothing_changes(shared_url):
        response = shared_client.request(method, path, headers=headers, content=_body(method))

    assert_error(response, 401, "UNAUTHORISED")
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path"), [("PATCH", ONE), ("POST", LIST)])
def test_a_repeated_content_type_is_415(
    shared_client: TestClient, shared_url: str, method: str, path: str
) -> None:
    headers = [
        ("authorization", ORG_A1["Authorization"]),
        ("content-type", "application/json"),
        ("content-type", "application/json"),
    ]
    with nothing_changes(shared_url):
        response = shared_client.request(method, path, headers=headers, content=_body(method))

    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


# --- content codings and charsets ------------------------------------------------------------


@pytest.mark.parametrize(
    ("coding", "content"),
    [
        ("br", None),  # a plain body labelled br: once created an integration
        ("gzip", "gzip"),  # a real gzip body: once 400 MALFORMED_JSON
        ("deflate", None),
        ("GZIP", "gzip"),
        ("gzip, identity", "gzip"),
        ("identity, br", None),
        ("compress", None),
    ],
)
@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_a_content_coding_the_service_does_not_decode_is_415(
    shared_client: TestClient, shared_url: str, coding: str, content: str | None, method: str
) -> None:
    body = _body(method)
    if content == "gzip":
        body = gzip.compress(body)
    path = LIST if method == "POST" else ONE
    with nothing_changes(shared_url):
        response = shared_client.request(
            method, path, content=body, headers={**JSON, "Content-Encoding": coding}
        )

    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert "Content-Encoding" in error_entries(response)[0]["message"]


@pytest.mark.parametrize("coding", ["identity", "Identity", ""])
def test_identity_coding_is_a_plain_body(client: TestClient, coding: str) -> None:
    response = client.post(
        LIST, content=_body("POST"), headers={**JSON, "Content-Encoding": coding}
    )

    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=latin1",
        "application/json; charset=ISO-8859-1",
        "application/json; charset=utf-16",
        "application/json; charset=utf-32",
        "application/json; charset=us-ascii",
        'application/json; charset="utf-16"',
        "application/json; charset=",
        "application/json; charset=utf-8; charset=latin1",
    ],
)
@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_a_charset_other_than_utf_8_is_415(
    shared_client: TestClient, shared_url: str, content_type: str, method: str
) -> None:
    path = LIST if method == "POST" else ONE
    with nothing_changes(shared_url):
        response = shared_client.request(
            method, path, content=_body(method), headers={**ORG_A1, "Content-Type": content_type}
        )

    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert error_entries(response)[0]["message"] == "The request body must be JSON in UTF-8"


@pytest.mark.parametrize(
    "content_type",
    ['application/json; charset="utf-8"', "application/json; charset=UTF8", "APPLICATION/JSON"],
)
def test_utf_8_however_spelt_is_accepted(client: TestClient, content_type: str) -> None:
    response = client.post(
        LIST, content=_body("POST"), headers={**ORG_A1, "Content-Type": content_type}
    )

    assert response.status_code == 201, response.text


# --- the offset's maximum --------------------------------------------------------------------


def test_the_largest_offset_is_an_empty_page_with_the_true_count(
    shared_client: TestClient,
) -> None:
    response = shared_client.get(LIST, params={"offset": 10**18}, headers=ORG_A1)

    assert response.status_code == 200, response.text
    assert response.json()["items"] == []
    assert response.json()["count"] > 0


@pytest.mark.parametrize("offset", [str(10**18 + 1), str(2**63), "9" * 40, "9" * 41])
def test_an_offset_past_the_maximum_says_the_maximum(
    shared_client: TestClient, shared_url: str, offset: str
) -> None:
    response = shared_client.get(f"{LIST}?offset={offset}", headers=ORG_A1)

    assert_error(response, 422, "VALIDATION_ERROR", "offset")
    assert error_entries(response)[0]["message"] == (
        "Must be an integer from 0 to 1000000000000000000"
    )


def test_the_document_states_the_offsets_maximum(shared_client: TestClient) -> None:
    document = shared_client.get("/v1/openapi.json").json()
    parameters = document["paths"][LIST]["get"]["parameters"]
    offset = next(p for p in parameters if p["name"] == "offset")

    assert offset["schema"]["maximum"] == 10**18
    assert offset["schema"]["minimum"] == 0


# --- a hostile body's problems ---------------------------------------------------------------


_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


def _unknown_key(n: int) -> str:
    """The n-th unknown key: three characters, so 110,000 of them fit in 1 MiB."""
    return "".join(_LETTERS[n // 64**p % 64] for p in (2, 1, 0))


def _many_unknown_keys(count: int, **fields: Any) -> bytes:
    body: dict[str, Any] = dict(fields)
    body.update({_unknown_key(n): 1 for n in range(count)})
    return json.dumps(body, separators=(",", ":")).encode()


def test_a_body_of_110000_unknown_keys_lists_the_first_problems_and_counts_the_rest(
    shared_client: TestClient, shared_url: str
) -> None:
    content = _many_unknown_keys(110_000, **create_body())
    assert len(content) < 1024 * 1024
    with nothing_changes(shared_url):
        response = shared_client.post(LIST, content=content, headers=JSON)

    entries = error_entries(response)
    assert response.status_code == 422
    assert len(entries) == MAX_PROBLEMS + 1
    assert entries[:MAX_PROBLEMS] == [
        {"code": "VALIDATION_ERROR", "message": "Unknown field", "field": _unknown_key(n)}
        for n in range(MAX_PROBLEMS)
    ]
    assert entries[-1] == {
        "code": "VALIDATION_ERROR",
        "message": f"{110_000 - MAX_PROBLEMS} more problems are not listed",
    }


def test_the_known_fields_problems_are_still_listed_beside_many_unknown_keys(
    shared_client: TestClient, shared_url: str
) -> None:
    content = _many_unknown_keys(500, organisation_id="org_a1", name="", type="OTHER")
    with nothing_changes(shared_url):
        response = shared_client.post(LIST, content=content, headers=JSON)

    entries = error_entries(response)
    fields = [e.get("field") for e in entries]
    assert response.status_code == 422
    assert {"name", "type", "merchant_ids"} <= set(fields)
    assert len(entries) == MAX_PROBLEMS + 1
    # 500 unknown keys and 3 problems of the known fields, 100 of them listed.
    assert entries[-1]["message"] == f"{503 - MAX_PROBLEMS} more problems are not listed"
    assert "field" not in entries[-1]


def test_exactly_max_problems_are_listed_without_a_summary(
    shared_client: TestClient, shared_url: str
) -> None:
    content = _many_unknown_keys(MAX_PROBLEMS, **create_body())
    with nothing_changes(shared_url):
        response = shared_client.post(LIST, content=content, headers=JSON)

    entries = error_entries(response)
    assert len(entries) == MAX_PROBLEMS
    assert all(e["message"] == "Unknown field" for e in entries)


# --- a real server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A `cbstop serve` on an SQLite file holding the matrix world."""
    url = f"sqlite:///{tmp_path_factory.mktemp('ambiguous') / 'cbstop.db'}"
    with running(url) as server:
        load_world(url, world("matrix"), key_secret=TEST_KEY_SECRET)
        yield server


def _exchange(server: Server, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request over a raw connection; the status, headers and body of its answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


@pytest.mark.xdist_group("servers")
def test_a_real_server_refuses_a_repeated_authorization_header(real_server: Server) -> None:
    request = (
        f"GET {ONE} HTTP/1.1\r\nHost: localhost\r\n"
        f"Authorization: Bearer {KEY}\r\nAuthorization: Bearer junk\r\n"
        "Connection: close\r\n\r\n"
    ).encode()

    status, headers, body = _exchange(real_server, request)

    assert status == 401
    assert json.loads(body)["errors"][0]["code"] == "UNAUTHORISED"
    assert headers["x-request-id"]


@pytest.mark.xdist_group("servers")
@pytest.mark.parametrize(
    "path", ["/healthz", "/readyz", "/metrics", "/v1/openapi.json", "/v1/docs", ONE, LIST]
)
def test_head_answers_every_get_path_like_get_without_a_body(
    real_server: Server, path: str
) -> None:
    def request(method: str) -> bytes:
        return (
            f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n"
            f"Authorization: Bearer {KEY}\r\nConnection: close\r\n\r\n"
        ).encode()

    get_status, get_headers, get_body = _exchange(real_server, request("GET"))
    head_status, head_headers, head_body = _exchange(real_server, request("HEAD"))

    assert get_status == head_status == 200
    assert head_body == b""
    assert head_headers["content-type"] == get_headers["content-type"]
    assert head_headers["x-request-id"]
    if path not in ("/metrics",):  # the metrics count the GET itself
        assert head_headers["content-length"] == str(len(get_body))
