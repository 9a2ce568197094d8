"""Only the exact key authenticates (issue item 8), over a raw socket to a real server.

The header reaches the app as Latin-1 text, and Python's `str.strip()` takes 0xA0 (no-break
space), 0x85 (next line) and the other Unicode spaces for whitespace: a key followed by one of
them once authenticated. HTTP clients refuse or re-encode such bytes, so they are sent here as
bytes on a socket to `cbstop serve`, on both databases. The rule is docs/decisions.md's
"Exact keys": the field's surrounding spaces and tabs are not part of it (RFC 9110 5.5), the
scheme word is case-insensitive and followed by one or more spaces, and the key is the rest,
byte for byte.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import orjson
import pytest
from starlette.testclient import TestClient

from cbstop.auth.keys import generate_key, is_key_shaped
from cbstop.auth.service import bearer_token
from cbstop.demo import WORLD
from cbstop.world.loader import load_world
from tests.conftest import DIALECTS, _require_postgres
from tests.integrations.helpers import secret, world
from tests.reliability.processes import Server, running
from tests.support import TEST_KEY_SECRET, DatabaseMaker

KEY = secret(world("matrix"), "key_org_a1").encode()
ITEM = b"/v1/integrations/int_a1_orders"
UNAUTHORISED = {"errors": [{"code": "UNAUTHORISED", "message": "Unauthorised"}]}
MALFORMED = {"errors": [{"code": "MALFORMED_REQUEST", "message": "The request is not valid HTTP"}]}


@pytest.fixture(scope="module", params=DIALECTS)
def server(request: pytest.FixtureRequest, database_maker: DatabaseMaker) -> Iterator[Server]:
    """A `cbstop serve` over the matrix world, one per dialect for the module."""
    if request.param == "postgresql":
        _require_postgres()
    with database_maker.database(request.param) as url, running(url) as served:
        load_world(url, world("matrix"), key_secret=TEST_KEY_SECRET)
        yield served


def _get(server: Server, authorization: bytes) -> tuple[int, dict[str, str], object]:
    """GET one integration with this Authorization value, as bytes; status, headers, body."""
    request = b"\r\n".join(
        [
            b"GET " + ITEM + b" HTTP/1.1",
            b"Host: localhost",
            b"Authorization: " + authorization,
            b"Connection: close",
            b"",
            b"",
        ]
    )
    received = b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (chunk := sock.recv(65536)):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split(" ")[1]), headers, orjson.loads(body)


# A byte after (or before) the exact key that a whitespace-stripping parser would drop.
NOT_THE_KEY: list[tuple[str, bytes]] = [
    ("no-break space 0xA0 after the key", b"Bearer " + KEY + b"\xa0"),
    ("next line 0x85 after the key", b"Bearer " + KEY + b"\x85"),
    ("no-break space 0xA0 before the key", b"Bearer \xa0" + KEY),
    ("next line 0x85 before the scheme", b"\x85Bearer " + KEY),
    ("a tab and more after the key", b"Bearer " + KEY + b"\tx"),
    ("a space and more after the key", b"Bearer " + KEY + b" x"),
    ("a tab between scheme and key", b"Bearer\t" + KEY),
    ("no space between scheme and key", b"Bearer" + KEY),
    ("the key with its last character cut", b"Bearer " + KEY[:-1]),
    ("the key and one more character", b"Bearer " + KEY + b"0"),
]


@pytest.mark.xdist_group("servers")
@pytest.mark.parametrize(
    "authorization", [a for _, a in NOT_THE_KEY], ids=[n for n, _ in NOT_THE_KEY]
)
def test_anything_but_the_exact_key_is_unauthorised(server: Server, authorization: bytes) -> None:
    status, headers, body = _get(server, authorization)
    assert (status, body) == (401, UNAUTHORISED)
    assert headers["www-authenticate"] == "Bearer"


# ASCII control characters Python also strips as whitespace. uvicorn's parser refuses them in a
# header value before the app runs; the app refuses them too, for any server or proxy that
# passes them on (the test client does).
CONTROLS = [b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\x1f"]


@pytest.mark.xdist_group("servers")
@pytest.mark.parametrize("control", CONTROLS, ids=[f"0x{c[0]:02X}" for c in CONTROLS])
def test_uvicorns_parser_refuses_a_control_character_after_the_key(
    server: Server, control: bytes
) -> None:
    status, _, body = _get(server, b"Bearer " + KEY + control)
    assert (status, body) == (400, MALFORMED)


@pytest.mark.parametrize("control", CONTROLS, ids=[f"0x{c[0]:02X}" for c in CONTROLS])
def test_the_app_refuses_a_control_character_after_the_key(
    shared_client: TestClient, control: bytes
) -> None:
    answer = shared_client.get(
        ITEM.decode(), headers=[(b"Authorization", b"Bearer " + KEY + control)]
    )
    assert (answer.status_code, answer.json()) == (401, UNAUTHORISED)
    assert answer.headers["www-authenticate"] == "Bearer"


# The same key, written as HTTP allows: the scheme in any case, one or more spaces after it,
# and spaces or tabs around the whole field value (which are not part of the value).
THE_KEY: list[tuple[str, bytes]] = [
    ("exactly", b"Bearer " + KEY),
    ("lower-case scheme", b"bearer " + KEY),
    ("upper-case scheme", b"BEARER " + KEY),
    ("two spaces after the scheme", b"Bearer  " + KEY),
    ("a trailing tab (optional whitespace)", b"Bearer " + KEY + b"\t"),
    ("trailing spaces (optional whitespace)", b"Bearer " + KEY + b"  "),
    ("a leading tab (optional whitespace)", b"\tBearer " + KEY),
]


@pytest.mark.xdist_group("servers")
@pytest.mark.parametrize("authorization", [a for _, a in THE_KEY], ids=[n for n, _ in THE_KEY])
def test_the_exact_key_authenticates(server: Server, authorization: bytes) -> None:
    status, _, body = _get(server, authorization)
    assert status == 200, body
    assert isinstance(body, dict) and body["id"] == "int_a1_orders"


# --- the one rule for what a key may look like -------------------------------------------------


def test_generated_demo_and_contract_keys_are_key_shaped() -> None:
    assert all(is_key_shaped(generate_key()) for _ in range(1000))
    demo = orjson.loads(WORLD.read_bytes())
    assert all(is_key_shaped(k["secret"]) for k in demo["api_keys"])
    assert is_key_shaped("cbs_test_org_xyz456_0000000000000000")  # CONTRACT 2.3's example


@pytest.mark.parametrize(
    "header",
    [
        "Bearer " + "k" * 19,  # shorter than any key can be
        "Bearer " + "k" * 513,  # longer than any key can be
        "Bearer cbs_caf\u00e9_0000000000000000",  # non-ASCII: no stored key can hold it
        "Bearer cbs_\x00_00000000000000000000",
        "Bearer cbs_\u2003_00000000000000000000",  # em space, not Latin-1: str.strip() takes it
        "Bearer ",
        "Bearer",
        "Basic " + KEY.decode(),
    ],
)
def test_a_value_that_cannot_be_a_key_gives_no_token(header: str) -> None:
    # No token: the Authenticator then hashes "" and answers as for an unknown key.
    assert bearer_token(header) is None
