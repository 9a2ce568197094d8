"""Load shedding (issue 12): a worker runs at most `CBSTOP_MAX_IN_FLIGHT` API requests at once;
the next one gets 503 SERVICE_UNAVAILABLE with `Retry-After: 1` at once, counted in
`cbstop_requests_shed_total`, instead of joining a queue every request waits in. The probes
and `/metrics` are never shed; a request that fails or whose client goes away gives its slot
back.

The slow requests are real: POSTs whose headers arrive and whose body follows only when the
test sends it. An admitted one holds its slot while it waits for its body, so the test decides
exactly how long the worker is full.
"""

from __future__ import annotations

import asyncio
import json
import selectors
import socket
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from cbstop.world.loader import load_world
from tests.integrations.helpers import create_body, secret, with_integrations, world
from tests.reliability.processes import Server, envelope_code, running
from tests.support import TEST_KEY_SECRET, query

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("servers")]

IN_FLIGHT = 4
# Long enough that a 503 "at once" and an admitted request waiting for its body cannot be
# confused on a busy 2-core machine; the 503s must come back in well under half of it.
BODY_DELAY = 3.0
ITEM = "/v1/integrations/int_a1_orders"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


@dataclass
class SlowPost:
    """A POST /v1/integrations on its own connection: headers now, the body when told."""

    port: int
    key: str
    body: bytes = field(default_factory=lambda: json.dumps(create_body()).encode())
    sock: socket.socket = field(init=False)
    sent_at: float = field(init=False)
    received: bytes = b""
    closed: bool = False
    answered_at: float | None = None

    def __post_init__(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        head = (
            "POST /v1/integrations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {self.key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(self.body)}\r\nConnection: close\r\n\r\n"
        )
        self.sent_at = time.monotonic()
        self.sock.sendall(head.encode())

    def send_body(self, body: bytes | None = None) -> None:
        self.sock.sendall(self.body if body is None else body)

    def disconnect(self) -> None:
        """Go away mid-body: half the body, then the connection closed."""
        self.sock.sendall(self.body[: len(self.body) // 2])
        self.sock.close()
        self.closed = True

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    @property
    def latency(self) -> float:
        assert self.answered_at is not None
        return self.answered_at - self.sent_at

    def answer(self) -> Answer:
        head, _, body = self.received.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return Answer(int(status_line.split()[1]), headers, json.loads(body) if body else None)

    def close(self) -> None:
        if not self.closed:
            self.sock.close()
            self.closed = True


def collect(requests: list[SlowPost], seconds: float) -> None:
    """Read the answers that arrive within `seconds` (an answer ends with the connection)."""
    deadline = time.monotonic() + seconds
    with selectors.DefaultSelector() as selector:
        for request in requests:
            if not request.answered and not request.closed:
                selector.register(request.sock, selectors.EVENT_READ, request)
        while selector.get_map() and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                request = key.data
                chunk = request.sock.recv(65536)
                if chunk:
                    request.received += chunk
                else:
                    request.answered_at = time.monotonic()
                    selector.unregister(request.sock)


@contextmanager
def slow_posts(server: Server, key: str, count: int) -> Iterator[list[SlowPost]]:
    """`count` slow POSTs, their headers sent one right after another; closed afterwards."""
    made: list[SlowPost] = []
    try:
        for _ in range(count):
            made.append(SlowPost(server.port, key))
        yield made
    finally:
        for request in made:
            request.close()


@dataclass
class Overload:
    server: Server
    url: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def get_item(self) -> httpx.Response:
        return httpx.get(self.server.url + ITEM, headers=self.headers, timeout=10)

    def shed_total(self) -> float:
        text = httpx.get(self.server.url + "/metrics", timeout=10).text
        for line in text.splitlines():
            if line.startswith("cbstop_requests_shed_total "):
                return float(line.split()[1])
        raise AssertionError(f"no cbstop_requests_shed_total in /metrics:\n{text}")

    def integrations(self) -> int:
        count: int = query(self.url, "SELECT count(*) FROM integrations")[0][0]
        return count

    def wait_full(self) -> int:
        """Wait until a GET is shed: every slot is held. How many GETs were shed (1)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            answer = self.get_item()
            if answer.status_code == 503:
                assert_shed(answer)
                return 1
            assert answer.status_code == 200, answer.text
            time.sleep(0.02)
        raise AssertionError("the held requests never filled the worker's slots")


def assert_shed(answer: httpx.Response | Answer) -> None:
    """503 SERVICE_UNAVAILABLE in the envelope, with `Retry-After: 1`."""
    if isinstance(answer, httpx.Response):
        status, retry = answer.status_code, answer.headers.get("retry-after")
        code = envelope_code(answer)
    else:
        status, retry = answer.status, answer.headers.get("retry-after")
        code = answer.body["errors"][0]["code"] if answer.body else None
    assert status == 503, answer
    assert code == "SERVICE_UNAVAILABLE", answer
    assert retry == "1", answer


@contextmanager
def overload(database_url: str, max_in_flight: int, *, load: bool = True) -> Iterator[Overload]:
    """One `cbstop serve` worker over the matrix world (loaded first, unless it already is)
    with `max_in_flight` slots."""
    matrix = world("matrix")
    if load:
        load_world(database_url, matrix, key_secret=TEST_KEY_SECRET)
    env = {"CBSTOP_MAX_IN_FLIGHT": str(max_in_flight)}
    with running(database_url, env=env) as server:
        yield Overload(server, database_url, secret(matrix, "key_org_a1"))


@pytest.fixture
def limited(database_url: str) -> Iterator[Overload]:
    with overload(database_url, IN_FLIGHT) as made:
        yield made


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def test_past_max_in_flight_slow_requests_get_503_at_once_and_the_admitted_complete(
    limited: Overload, dialect: str
) -> None:
    before = limited.integrations()
    with slow_posts(limited.server, limited.key, 4 * IN_FLIGHT) as posts:
        # The excess is refused without waiting for anything: not for its body, nor a slot.
        collect(posts, BODY_DELAY)
        shed = [p for p in posts if p.answered]
        held = [p for p in posts if not p.answered]
        assert len(shed) == 3 * IN_FLIGHT, [p.answer() for p in shed]
        for request in shed:
            assert_shed(request.answer())
            assert request.latency < BODY_DELAY / 2, request.latency
        # The held ones fill every slot: another API request is shed too...
        probes_shed = limited.wait_full()
        # ...but the probes and the metrics are never shed.
        for path in ("/healthz", "/readyz", "/metrics"):
            assert httpx.get(limited.server.url + path, timeout=10).status_code == 200, path
        assert limited.integrations() == before  # nothing of the refused ones ran
        bodies_at = time.monotonic()
        for request in held:
            request.send_body()
        collect(held, 30)
    answers = [request.answer() for request in held]
    assert [a.status for a in answers] == [201] * IN_FLIGHT, answers
    assert limited.integrations() == before + IN_FLIGHT
    assert limited.shed_total() == 3 * IN_FLIGHT + probes_shed
    # The slots are free again.
    assert limited.get_item().status_code == 200
    served = [(request.answered_at or 0) - bodies_at for request in held]
    print(
        f"\n[shedding {dialect}] {IN_FLIGHT} slots, {4 * IN_FLIGHT} slow POSTs: "
        f"{len(shed)} shed after at most {max(r.latency for r in shed) * 1000:.1f} ms "
        f"(median {statistics.median(r.latency for r in shed) * 1000:.1f} ms); the admitted "
        f"answered {max(served) * 1000:.1f} ms at most after their bodies arrived"
    )


def test_failed_and_abandoned_requests_give_their_slots_back(
    limited: Overload, dialect: str
) -> None:
    before = limited.integrations()
    # Requests that fail: bodies that are not JSON (400) free their slots...
    with slow_posts(limited.server, limited.key, IN_FLIGHT) as bad:
        limited.wait_full()
        for request in bad:
            request.send_body(b"{" * len(request.body))
        collect(bad, 30)
        answers = [request.answer() for request in bad]
    assert {a.status for a in answers} == {400}, answers
    assert {a.body["errors"][0]["code"] for a in answers} == {"MALFORMED_JSON"}, answers
    # ...and so do clients that go away halfway through their bodies.
    with slow_posts(limited.server, limited.key, IN_FLIGHT) as gone:
        limited.wait_full()
        for request in gone:
            request.disconnect()
    # After them, IN_FLIGHT fresh slow requests are all admitted again.
    deadline = time.monotonic() + 10
    while True:
        with slow_posts(limited.server, limited.key, IN_FLIGHT) as fresh:
            collect(fresh, 0.5)
            if not any(request.answered for request in fresh):
                limited.wait_full()  # the fresh ones hold every slot, nothing else does
                for request in fresh:
                    request.send_body()
                collect(fresh, 30)
                break
        # A disconnect is noticed within milliseconds; give it a moment, not forever.
        assert time.monotonic() < deadline, [r.answer() for r in fresh if r.answered]
        time.sleep(0.1)
    assert [request.answer().status for request in fresh] == [201] * IN_FLIGHT
    assert limited.integrations() == before + IN_FLIGHT
    assert limited.get_item().status_code == 200


def test_max_in_flight_zero_admits_every_request(database_url: str) -> None:
    with overload(database_url, 0) as unlimited:
        before = unlimited.integrations()
        with slow_posts(unlimited.server, unlimited.key, 4 * IN_FLIGHT) as posts:
            collect(posts, 0.5)
            assert not any(request.answered for request in posts)
            assert unlimited.get_item().status_code == 200
            for request in posts:
                request.send_body()
            collect(posts, 30)
        assert [request.answer().status for request in posts] == [201] * 4 * IN_FLIGHT
        assert unlimited.integrations() == before + 4 * IN_FLIGHT
        assert unlimited.shed_total() == 0


# --- the issue's reported bound: admitted requests' p99 under 4x overload ---------------------

LOAD_SECONDS = 3.0
# A list of 100 integrations: enough work per request that one worker, not the test's
# client, is what saturates.
LIST = "/v1/integrations?limit=100"
PAUSE = 0.05  # a shed client waits, as one honouring Retry-After would (scaled down)


@dataclass
class LoadResult:
    admitted: list[float] = field(default_factory=list)
    shed: list[float] = field(default_factory=list)
    other: list[bytes] = field(default_factory=list)


async def _drive(target: Overload, clients: int) -> LoadResult:
    """`clients` closed-loop keep-alive clients listing for LOAD_SECONDS.

    Raw HTTP/1.1 on asyncio streams: an HTTP library's per-request cost would make this
    process, not the server, the bottleneck on a 2-core machine.
    """
    result = LoadResult()
    stop = time.monotonic() + LOAD_SECONDS
    request = (
        f"GET {LIST} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {target.key}\r\n\r\n"
    ).encode()

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", target.server.port)
        try:
            while time.monotonic() < stop:
                started = time.monotonic()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                took = time.monotonic() - started
                status = head[9:12]
                if status == b"200":
                    result.admitted.append(took)
                elif status == b"503" and b"\r\nretry-after: 1\r\n" in head.lower():
                    assert json.loads(body)["errors"][0]["code"] == "SERVICE_UNAVAILABLE"
                    result.shed.append(took)
                    await asyncio.sleep(PAUSE)
                else:
                    result.other.append(head + body)
        finally:
            writer.close()
            await writer.wait_closed()

    await asyncio.gather(*(client() for _ in range(clients)))
    return result


def _ms(values: list[float], at: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(len(ordered) * at))] * 1000:.1f}"


def test_admitted_p99_under_four_times_overload_is_reported(
    database_url: str, dialect: str
) -> None:
    many = with_integrations(world("matrix"), "org_a1", "mrch_a1_1", 100)
    load_world(database_url, many, key_secret=TEST_KEY_SECRET)
    results: dict[str, LoadResult] = {}
    for label, slots in (("shedding", IN_FLIGHT), ("off", 0)):
        with overload(database_url, slots, load=False) as target:
            before = target.integrations()
            results[label] = asyncio.run(_drive(target, 4 * IN_FLIGHT))
            shed_total = target.shed_total()
            assert target.integrations() == before
        result = results[label]
        assert result.other == [], result.other[:1]
        assert result.admitted, label
        assert shed_total == len(result.shed), label
    on, off = results["shedding"], results["off"]
    assert on.shed, "4x the slots never overflowed them"
    assert off.shed == []
    # Generous: an admitted request never comes near the pool's 1 s wait.
    assert _p99(on.admitted) < 1.0, _p99(on.admitted)
    print(
        f"\n[shedding {dialect}] {4 * IN_FLIGHT} clients listing 100 for {LOAD_SECONDS:.0f} s, "
        f"one worker. CBSTOP_MAX_IN_FLIGHT={IN_FLIGHT}: {len(on.admitted)} admitted, p50 "
        f"{_ms(on.admitted, 0.5)} ms, p99 {_ms(on.admitted, 0.99)} ms; {len(on.shed)} shed, "
        f"p99 {_ms(on.shed, 0.99)} ms. CBSTOP_MAX_IN_FLIGHT=0: {len(off.admitted)} served, "
        f"p50 {_ms(off.admitted, 0.5)} ms, p99 {_ms(off.admitted, 0.99)} ms"
    )
