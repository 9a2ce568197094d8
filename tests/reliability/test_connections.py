"""No client can exhaust a worker: a real `cbstop serve`, over raw sockets.

A head past 16 KiB is 431 and the worker does not grow; a connection that sends nothing, half
a head or half a body is closed at its timeout; past the connection cap a request gets 503;
a request without `Host` is 400; an upgrade request is plain HTTP. Every refusal is the
envelope with an X-Request-Id, the connection closes, and the server serves the next client.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from cbstop.web.protocol import MAX_HEAD_BYTES
from cbstop.world.loader import load_world
from tests.integrations.helpers import secret, world
from tests.reliability.processes import Server, running
from tests.support import TEST_KEY_SECRET

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("servers")]

TIMEOUT = 1.0  # CBSTOP_HEADER_TIMEOUT and CBSTOP_BODY_TIMEOUT of the server under test
MARGIN = 1.0  # scheduling on a busy 2-core machine
KEY = secret(world("matrix"), "key_org_a1")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any
    closed_after: float  # seconds from the last byte sent to the server's close


def _parse(raw: bytes, closed_after: float) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in lines)}
    assert int(headers["content-length"]) == len(body), raw[:300]
    return Answer(int(status_line.split(" ")[1]), headers, orjson.loads(body), closed_after)


def _until_closed(sock: socket.socket, bound: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took (fails past bound)."""
    started = time.monotonic()
    received = b""
    sock.settimeout(bound)
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        raise AssertionError(f"still open after {bound}s; received {received[:200]!r}") from None
    except ConnectionResetError:
        pass  # it closed with our bytes unread: what it sent before is still what we got
    return received, time.monotonic() - started


def _exchange(server: Server, request: bytes, bound: float = MARGIN) -> Answer:
    """Send `request` whole; the answer, read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=bound) as sock:
        sock.sendall(request)
        raw, took = _until_closed(sock, bound)
    return _parse(raw, took)


def _refused(answer: Answer, status: int, code: str) -> None:
    """The whole refusal: status, the envelope's code, a request id, closed at once."""
    assert answer.status == status, answer
    assert answer.body["errors"][0]["code"] == code, answer.body
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-request-id"]
    assert answer.headers["connection"] == "close"
    assert answer.closed_after < MARGIN


def _still_serves(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=5) as client:
        assert client.get("/healthz").status_code == 200


def _head(*lines: bytes, target: bytes = b"/healthz", version: bytes = b"HTTP/1.1") -> bytes:
    return b"\r\n".join([b"GET " + target + b" " + version, *lines]) + b"\r\n\r\n"


def _peak_rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One worker with 1 s header and body timeouts, over the matrix world on SQLite."""
    url = f"sqlite:///{tmp_path_factory.mktemp('connections') / 'cbstop.db'}"
    env = {"CBSTOP_HEADER_TIMEOUT": str(TIMEOUT), "CBSTOP_BODY_TIMEOUT": str(TIMEOUT)}
    with running(url, env=env) as started:
        load_world(url, world("matrix"), key_secret=TEST_KEY_SECRET)
        yield started


# --- the request head's size --------------------------------------------------------------


OVERSIZED: list[tuple[str, bytes]] = [
    ("one big header", _head(b"Host: x", b"X-Big: " + b"b" * MAX_HEAD_BYTES)),
    ("a big target", _head(b"Host: x", target=b"/healthz?q=" + b"q" * MAX_HEAD_BYTES)),
    ("many small headers", _head(b"Host: x", *[b"X-%d: v" % i for i in range(2000)])),
]


@pytest.mark.parametrize(("name", "request_bytes"), OVERSIZED, ids=[n for n, _ in OVERSIZED])
def test_a_head_over_16_kib_gets_431_in_the_envelope_and_the_connection_closes(
    server: Server, name: str, request_bytes: bytes
) -> None:
    answer = _exchange(server, request_bytes)

    _refused(answer, 431, "REQUEST_HEADER_FIELDS_TOO_LARGE")
    _still_serves(server)


def test_a_head_just_under_16_kib_is_served(server: Server) -> None:
    padding = MAX_HEAD_BYTES - 1024
    with httpx.Client(base_url=server.url, timeout=5) as client:
        answer = client.get("/healthz", headers={"X-Padding": "p" * padding})
    assert answer.status_code == 200


def test_a_header_that_never_ends_gets_431_and_the_worker_does_not_grow(server: Server) -> None:
    # Before the limit, one 200 MiB header was read whole (peak RSS 72 -> 482 MB) and got 200.
    assert server.proc is not None
    before = _peak_rss_kib(server.proc.pid)
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=MARGIN) as sock:
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Endless: ")
            while sent < 64 << 20:
                sock.sendall(b"e" * (1 << 20))
                sent += 1 << 20
        except (BrokenPipeError, ConnectionResetError):
            pass
        raw, _ = _until_closed(sock, MARGIN)
    grown = _peak_rss_kib(server.proc.pid) - before

    assert sent < 64 << 20, "the server read 64 MiB of one header"
    assert grown < 16 * 1024, f"peak RSS grew by {grown} KiB"
    if raw:  # the 431 arrives unless the close's reset overtook it
        _refused(_parse(raw, 0.0), 431, "REQUEST_HEADER_FIELDS_TOO_LARGE")
    _still_serves(server)


# --- Host (RFC 9112 §3.2) -----------------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [_head(b"Accept: */*"), _head(b"Host: a", b"Host: b"), _head(b"Host: a", b"Host: a")],
    ids=["no Host", "two Hosts", "the same Host twice"],
)
def test_an_http_1_1_request_without_exactly_one_host_is_400(
    server: Server, request_bytes: bytes
) -> None:
    _refused(_exchange(server, request_bytes), 400, "MALFORMED_REQUEST")
    _still_serves(server)


def test_an_http_1_0_request_needs_no_host_but_may_not_have_two(server: Server) -> None:
    assert _exchange(server, _head(version=b"HTTP/1.0")).status == 200
    _refused(
        _exchange(server, _head(b"Host: a", b"Host: b", version=b"HTTP/1.0")),
        400,
        "MALFORMED_REQUEST",
    )


# --- timeouts ------------------------------------------------------------------------------


def _closed_without_answer(sock: socket.socket) -> float:
    """Seconds until the server closes the connection, having sent nothing."""
    raw, took = _until_closed(sock, TIMEOUT + MARGIN)
    assert raw == b""
    return took


def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        took = _closed_without_answer(sock)
    assert took > TIMEOUT * 0.8
    _still_serves(server)


def test_a_head_sent_a_byte_at_a_time_is_closed_at_the_header_timeout(server: Server) -> None:
    """Slowloris: progress on the head does not extend its deadline."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=MARGIN) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        try:
            while time.monotonic() - started < TIMEOUT * 5:
                sock.sendall(b"s")
                time.sleep(TIMEOUT / 10)
        except (BrokenPipeError, ConnectionResetError):
            pass
        raw, _ = _until_closed(sock, MARGIN)
    took = time.monotonic() - started
    assert raw == b""
    assert TIMEOUT * 0.8 < took < TIMEOUT + MARGIN
    _still_serves(server)


def test_a_second_request_half_sent_on_a_kept_alive_connection_is_closed(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=MARGIN) as sock:
        sock.sendall(_head(b"Host: x"))
        first = b""
        while not first.endswith(b'{"status":"ok"}'):
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 "), first
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        _closed_without_answer(sock)
    _still_serves(server)


def test_a_body_that_stalls_while_the_app_reads_it_is_closed_at_the_body_timeout(
    server: Server,
) -> None:
    head = b"POST /v1/integrations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
    head += b"\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=MARGIN) as sock:
        sock.sendall(head + b'{"name": ')
        took = _closed_without_answer(sock)
    assert took > TIMEOUT * 0.8
    _still_serves(server)
    assert "Traceback" not in server.output
    assert '"level":"error"' not in server.output


def test_a_body_that_keeps_arriving_is_not_cut_off(server: Server) -> None:
    """The body's timeout is between two reads, not for the whole body."""
    body = orjson.dumps({"organisation_id": "org_a1", "name": "slow", "type": "CUSTOM_ORDERS"})
    head = b"POST /v1/integrations HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    head += b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Type: application/json\r\n"
    head += b"Content-Length: %d\r\n\r\n" % len(body)
    with socket.create_connection(("127.0.0.1", server.port), timeout=MARGIN) as sock:
        sock.sendall(head)
        pieces = [body[i : i + len(body) // 4 + 1] for i in range(0, len(body), len(body) // 4 + 1)]
        for piece in pieces:  # twice the timeout in all, each gap half of it
            time.sleep(TIMEOUT / 2)
            sock.sendall(piece)
        raw, _ = _until_closed(sock, MARGIN * 5)
    answer = _parse(raw, 0.0)
    assert answer.status == 422, answer  # the app read the whole body (it lacks merchant_ids)
    assert answer.body["errors"][0]["code"] == "VALIDATION_ERROR"


# --- upgrades ------------------------------------------------------------------------------


def test_a_websocket_upgrade_is_answered_as_plain_http_in_the_envelope(server: Server) -> None:
    upgrade = _head(
        b"Host: x",
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        b"Sec-WebSocket-Version: 13",
        target=b"/v1/integrations",
    )
    # A request pipelined behind it would go unread: the connection closes after the answer.
    answer = _exchange(server, upgrade + _head(b"Host: x"))

    _refused(answer, 401, "UNAUTHORISED")
    assert "upgrade" not in server.output.lower()
    _still_serves(server)


# --- the connection cap --------------------------------------------------------------------


def test_a_request_past_the_connection_cap_gets_503_and_a_freed_slot_serves_again(
    tmp_path: Path,
) -> None:
    env = {"CBSTOP_MAX_CONNECTIONS": "3", "CBSTOP_HEADER_TIMEOUT": "30"}
    with running(f"sqlite:///{tmp_path / 'cbstop.db'}", env=env) as capped:
        idle = [socket.create_connection(("127.0.0.1", capped.port)) for _ in range(3)]
        try:
            time.sleep(0.3)  # the worker accepts them
            answer = _exchange(capped, _head(b"Host: x"))
            _refused(answer, 503, "SERVICE_UNAVAILABLE")
            assert answer.headers["retry-after"] == "1"
            idle.pop().close()
            time.sleep(0.3)  # the worker sees it go
            assert _exchange(capped, _head(b"Host: x", b"Connection: close")).status == 200
        finally:
            for sock in idle:
                sock.close()


def test_every_worker_closes_a_silent_connection_at_the_header_timeout(tmp_path: Path) -> None:
    """The limits reach spawned workers too (in the protocol uvicorn's config carries)."""
    env = {"CBSTOP_HEADER_TIMEOUT": str(TIMEOUT)}
    with running(f"sqlite:///{tmp_path / 'cbstop.db'}", workers=2, env=env) as pair:
        silent = [socket.create_connection(("127.0.0.1", pair.port)) for _ in range(6)]
        try:
            for sock in silent:
                _closed_without_answer(sock)
        finally:
            for sock in silent:
                sock.close()
        _still_serves(pair)
