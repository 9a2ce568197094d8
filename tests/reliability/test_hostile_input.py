"""Hostile input: whatever a client sends, it gets its contract error quickly, never a 5xx,
and nothing changes. Through the app on both databases, and over a raw socket to a real
server for what an HTTP client library refuses to send."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from cbstop.world.loader import load_world
from tests.conftest import DIALECTS, _require_postgres
from tests.integrations.helpers import secret, world
from tests.reliability.processes import Server, running
from tests.support import TEST_KEY_SECRET, DatabaseMaker, api_client, snapshot

QUICKLY = 1.0  # seconds
KEY = secret(world("matrix"), "key_org_a1")
AUTH = {"Authorization": f"Bearer {KEY}"}
JSON = {**AUTH, "Content-Type": "application/json"}
ITEM = "/v1/integrations/int_a1_orders"


def _create(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "organisation_id": "org_a1",
        "name": "hostile",
        "type": "CUSTOM_ORDERS",
        "merchant_ids": ["mrch_a1_1"],
    }
    body.update(over)
    return body


@dataclass
class Hostile:
    url: str
    client: TestClient
    before: dict[str, list[tuple[Any, ...]]]


@pytest.fixture(scope="module", params=DIALECTS)
def hostile(request: pytest.FixtureRequest, database_maker: DatabaseMaker) -> Iterator[Hostile]:
    """One database per dialect for the whole module: no request here may change it."""
    if request.param == "postgresql":
        _require_postgres()
    with database_maker.database(request.param) as url, api_client(url, world("matrix")) as client:
        yield Hostile(url, client, snapshot(url))


def _send(
    h: Hostile, method: str, path: str, *, content: bytes | None = None, headers: Any = None
) -> httpx.Response:
    started = time.monotonic()
    answer: httpx.Response = h.client.request(method, path, content=content, headers=headers)
    took = time.monotonic() - started
    assert took < QUICKLY, f"{method} {path[:80]} took {took:.2f}s"
    assert answer.status_code < 500, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    return answer


def _refused(answer: httpx.Response, status: int, code: str, field: str | None = None) -> None:
    assert answer.status_code == status, answer.text
    entries = answer.json()["errors"]
    assert entries[0]["code"] == code, entries
    if field is not None:
        assert [e.get("field") for e in entries] == [field], entries


def _json(value: Any) -> bytes:
    import orjson

    return orjson.dumps(value)


# (name, method, path, body, extra headers, status, code, field)
Case = tuple[str, str, str, bytes | None, dict[str, Any] | None, int, str, str | None]
NESTED = 100_000
DIGITS = "9" * 10_000
CASES: list[Case] = [
    ("raw NUL in a string", "POST", "/v1/integrations",
     b'{"organisation_id":"org_a1","name":"a\x00b","type":"CUSTOM_ORDERS",'
     b'"merchant_ids":["mrch_a1_1"]}', None, 400, "MALFORMED_JSON", None),
    ("escaped NUL in the name", "POST", "/v1/integrations",
     _json(_create(name="a\u0000b")), None, 422, "VALIDATION_ERROR", "name"),
    ("escaped NUL in a merchant id", "POST", "/v1/integrations",
     _json(_create(merchant_ids=["mrch_a1_1\u0000"])), None, 422, "INVALID_MERCHANT_IDS", None),
    ("escaped NUL in the organisation id", "POST", "/v1/integrations",
     _json(_create(organisation_id="org_a1\u0000")), None, 404, "NOT_FOUND", None),
    ("escaped NUL in a renamed name", "PATCH", ITEM,
     _json({"name": "x\u0000"}), None, 422, "VALIDATION_ERROR", "name"),
    ("invalid UTF-8 in the body", "POST", "/v1/integrations",
     b'{"organisation_id":"org_a1","name":"\xff\xfe","type":"CUSTOM_ORDERS",'
     b'"merchant_ids":["mrch_a1_1"]}', None, 400, "MALFORMED_JSON", None),
    ("a lone surrogate escape in the name", "POST", "/v1/integrations",
     _json(_create(name="x")).replace(b'"x"', b'"\\ud800"'), None, 422, "VALIDATION_ERROR",
     "name"),
    ("a lone surrogate escape in a merchant id", "POST", "/v1/integrations",
     _json(_create(merchant_ids=["x"])).replace(b'"x"', b'"\\udfff"'), None, 422,
     "VALIDATION_ERROR", "merchant_ids.0"),
    ("a lone surrogate escape in a PATCH", "PATCH", ITEM,
     b'{"name": "\\ud83d"}', None, 422, "VALIDATION_ERROR", "name"),
    ("100,000 nested arrays", "POST", "/v1/integrations",
     b"[" * NESTED + b"]" * NESTED, None, 400, "MALFORMED_JSON", None),
    ("100,000 nested objects", "PATCH", ITEM,
     b'{"name":' * NESTED + b"1" + b"}" * NESTED, None, 400, "MALFORMED_JSON", None),
    ("a name of 10,000 digits", "POST", "/v1/integrations",
     _json(_create(name="x")).replace(b'"x"', DIGITS.encode()), None, 422,
     "VALIDATION_ERROR", "name"),
    ("a merchant id of 10,000 digits", "POST", "/v1/integrations",
     _json(_create(merchant_ids=["x"])).replace(b'"x"', DIGITS.encode()), None, 422,
     "VALIDATION_ERROR", "merchant_ids.0"),
    ("a float of 10,000 digits", "PATCH", ITEM,
     b'{"name": 0.' + DIGITS.encode() + b"}", None, 422, "VALIDATION_ERROR", "name"),
    ("an exponent past any float", "PATCH", ITEM,
     b'{"status": 1e999999}', None, 422, "VALIDATION_ERROR", "status"),
    ("1,000 unknown merchant ids", "POST", "/v1/integrations",
     _json(_create(merchant_ids=[f"mrch_unknown_{n:051d}" for n in range(1000)])), None,
     422, "INVALID_MERCHANT_IDS", None),
    ("1,001 merchant ids", "POST", "/v1/integrations",
     _json(_create(merchant_ids=[f"mrch_{n}" for n in range(1001)])), None,
     422, "VALIDATION_ERROR", "merchant_ids"),
    ("an 8 KB bearer key", "GET", ITEM, None,
     {"Authorization": "Bearer " + "k" * 8192}, 401, "UNAUTHORISED", None),
    ("an 8 KB content type", "PATCH", ITEM, b'{"name": "x"}',
     {"Content-Type": "application/" + "j" * 8192}, 415, "UNSUPPORTED_MEDIA_TYPE", None),
    ("invalid UTF-8 in the key", "GET", ITEM, None,
     {"Authorization": b"Bearer \xff\xfe\xc0\x80"}, 401, "UNAUTHORISED", None),
    ("a 5,000 character id", "GET", "/v1/integrations/int_" + "a" * 4996, None, None,
     404, "NOT_FOUND", None),
    ("a 5,000 character id to PATCH", "PATCH", "/v1/integrations/int_" + "a" * 4996,
     b'{"name": "x"}', None, 404, "NOT_FOUND", None),
    ("a 5,000 character id of multibyte letters", "GET", "/v1/integrations/" + "é" * 5000,
     None, None, 404, "NOT_FOUND", None),
    ("a percent-encoded NUL id", "GET", "/v1/integrations/%00", None, None, 404,
     "NOT_FOUND", None),
    ("a percent-encoded NUL id to PATCH", "PATCH", "/v1/integrations/int_a1_orders%00",
     b'{"name": "x"}', None, 404, "NOT_FOUND", None),
    ("percent-encoded invalid UTF-8", "GET", "/v1/integrations/%FF%FE%C0%80", None, None,
     404, "NOT_FOUND", None),
    ("percent-encoded traversal", "GET", "/v1/integrations/..%2F..%2Fetc%2Fpasswd", None,
     None, 404, "NOT_FOUND", None),
    ("percent-encoded right-to-left override", "GET", "/v1/integrations/%E2%80%AEint", None,
     None, 404, "NOT_FOUND", None),
    ("double percent-encoding", "GET", "/v1/integrations/%2525%2500", None, None, 404,
     "NOT_FOUND", None),
    ("a NUL in the limit", "GET", "/v1/integrations?limit=1%00", None, None, 422,
     "VALIDATION_ERROR", "limit"),
    ("invalid UTF-8 in the offset", "GET", "/v1/integrations?offset=%FF", None, None, 422,
     "VALIDATION_ERROR", "offset"),
    ("a limit of 10,000 digits", "GET", "/v1/integrations?limit=" + DIGITS, None, None,
     422, "VALIDATION_ERROR", "limit"),
    ("percent-encoded junk as a parameter name", "GET", "/v1/integrations?%00%FF=1", None,
     None, 422, "VALIDATION_ERROR", None),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_gets_its_contract_error_and_changes_nothing(
    hostile: Hostile, case: Case
) -> None:
    _, method, path, body, extra, status, code, field = case
    headers = {**(JSON if body is not None else AUTH), **(extra or {})}
    answer = _send(hostile, method, path, content=body, headers=headers)
    _refused(answer, status, code, field)
    assert snapshot(hostile.url) == hostile.before


def test_an_8kb_request_id_is_replaced_not_echoed(hostile: Hostile) -> None:
    answer = _send(hostile, "GET", ITEM, headers={**AUTH, "X-Request-Id": "r" * 8192})
    assert answer.status_code == 200
    assert 0 < len(answer.headers["x-request-id"]) <= 128


def test_an_8kb_unknown_header_is_ignored(hostile: Hostile) -> None:
    answer = _send(hostile, "GET", ITEM, headers={**AUTH, "X-Junk": "\x7f" * 8192})
    assert answer.status_code == 200


# --- over a raw socket, to a real server --------------------------------------------------


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A `cbstop serve` on an SQLite file holding the matrix world."""
    url = f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'cbstop.db'}"
    with running(url) as server:
        load_world(url, world("matrix"), key_secret=TEST_KEY_SECRET)
        yield server


def _raw(server: Server, request: bytes) -> tuple[int | None, bytes]:
    """Send bytes as they are; the status of the answer (None if the server just closed)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=QUICKLY * 2) as sock:
        sock.sendall(request)
        received = b""
        started = time.monotonic()
        while b"\r\n\r\n" not in received and time.monotonic() - started < QUICKLY * 2:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    if not received:
        return None, received
    return int(received.split(b" ", 2)[1]), received


def _request(target: bytes, *headers: bytes, method: bytes = b"GET", body: bytes = b"") -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: localhost", *headers]
    lines.append(b"Authorization: Bearer " + KEY.encode())
    if body:
        lines += [b"Content-Type: application/json", b"Content-Length: %d" % len(body)]
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


RAW: list[tuple[str, bytes]] = [
    ("NUL in a header value", _request(ITEM.encode(), b"X-Junk: a\x00b")),
    ("NUL in the key", _request(ITEM.encode(), b"Authorization: Bearer cbs_\x00")),
    ("invalid UTF-8 in the path", _request(b"/v1/integrations/\xff\xfe")),
    ("NUL in the path", _request(b"/v1/integrations/a\x00b")),
    ("invalid UTF-8 in the query", _request(b"/v1/integrations?limit=\xff")),
    ("invalid UTF-8 in a header value", _request(ITEM.encode(), b"X-Request-Id: \xff\xfe")),
    ("a 64 KB header", _request(ITEM.encode(), b"X-Junk: " + b"j" * 65536)),
    ("a Content-Length past any body", _request(
        ITEM.encode(), b"Content-Type: application/json",
        b"Content-Length: 99999999999999999999999", method=b"PATCH")),
    ("a negative Content-Length", _request(
        ITEM.encode(), b"Content-Type: application/json", b"Content-Length: -1",
        method=b"PATCH")),
    ("a bad chunk size", _request(
        ITEM.encode(), b"Content-Type: application/json", b"Transfer-Encoding: chunked",
        method=b"PATCH") + b"zz\r\n{}\r\n0\r\n\r\n"),
]  # fmt: skip


@pytest.mark.xdist_group("servers")
def test_malformed_http_never_gets_a_5xx_and_the_server_stays_up(real_server: Server) -> None:
    answers: dict[str, int | None] = {}
    for name, request in RAW:
        started = time.monotonic()
        status, raw = _raw(real_server, request)
        assert time.monotonic() - started < QUICKLY * 2, name
        answers[name] = status
        assert status is None or status < 500, (name, raw[:300])
    with httpx.Client(base_url=real_server.url, timeout=5) as client:
        assert client.get(ITEM, headers=AUTH).status_code == 200
    log = real_server.output
    assert "Traceback" not in log
    assert '"level":"error"' not in log
    print(f"\n[hostile raw] {answers}")


def _raw_whole(server: Server, request: bytes) -> bytes:
    """Send bytes as they are and read the whole answer, until the server closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=QUICKLY * 2) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


# Requests uvicorn's HTTP parser refuses before the app sees them (its private
# `send_400_response`, which cbstop.web.protocol overrides to write the envelope).
UNPARSABLE: list[tuple[str, bytes]] = [
    ("NUL in a header value", _request(ITEM.encode(), b"X-Junk: a\x00b")),
    ("a broken request line", b"GET /v1/integrations HTTP/9\r\nHost: x\r\n\r\n"),
    ("a bad chunk size", _request(
        ITEM.encode(), b"Content-Type: application/json", b"Transfer-Encoding: chunked",
        method=b"PATCH") + b"zz\r\n{}\r\n0\r\n\r\n"),
]  # fmt: skip


@pytest.mark.xdist_group("servers")
@pytest.mark.parametrize(("name", "request_bytes"), UNPARSABLE, ids=[n for n, _ in UNPARSABLE])
def test_a_request_the_parser_refuses_gets_the_envelope_from_a_real_server(
    real_server: Server, name: str, request_bytes: bytes
) -> None:
    raw = _raw_whole(real_server, request_bytes)

    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    assert status_line == "HTTP/1.1 400 Bad Request", (name, raw[:300])
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    assert headers["connection"] == "close"
    assert headers["x-request-id"]
    assert headers["cache-control"] == "no-store"
    assert httpx.Response(400, content=body).json() == {
        "errors": [{"code": "MALFORMED_REQUEST", "message": "The request is not valid HTTP"}]
    }
