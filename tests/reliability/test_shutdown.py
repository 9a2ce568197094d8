"""SIGTERM under load: readiness turns 503 at once, requests in flight complete, the process
exits 0 within the drain timeout, and no request the server accepted fails.

These guard uvicorn's private names that cbstop/server.py uses (bounded in pyproject.toml):
`Server._captured_signals` (exit 0, not -15) and the supervisor's `multiprocess.Process`,
`multiprocess.Server` and `Process.target` (every worker drains).
"""

from __future__ import annotations

import itertools
import json
import signal
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import psycopg
import pytest
import uvicorn

from cbstop.db.database import sqlite_path
from cbstop.integrations.batching import FLIGHTS
from cbstop.world.loader import load_world
from tests.conftest import _require_postgres
from tests.integrations.helpers import secret, world
from tests.reliability.processes import Server, envelope_code
from tests.support import TEST_KEY_SECRET, DatabaseMaker, snapshot

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("servers")]

DRAIN_TIMEOUT = 6.0
IN_FLIGHT = 4  # PATCHes stuck behind a row lock when SIGTERM arrives
HELD = 1.0  # seconds the row lock outlives SIGTERM
ONE = "/v1/integrations/int_a1_orders"


@dataclass
class Sent:
    """One request of the background load."""

    request_id: str
    method: str
    status: int | None = None
    error: str | None = None


@dataclass
class Probe:
    """One `/readyz` request on a kept-alive connection."""

    sent: float
    status: int | None = None
    error: str | None = None


class Load:
    """Threads of GET/POST on kept-alive connections, each request tagged with an id."""

    def __init__(self, url: str, key: str, threads: int = 3) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {key}"}
        self.sent: list[Sent] = []
        self.probes: list[Probe] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(threads)]
        self._threads.append(threading.Thread(target=self._probe))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self, thread: int) -> None:
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=30) as client:
            for n in itertools.count():
                if self._stop.is_set():
                    return
                rid = uuid.uuid4().hex
                record = Sent(rid, "POST" if n % 3 == 0 else "GET")
                body = {
                    "organisation_id": "org_a1",
                    "name": f"drain t{thread} n{n}",
                    "type": "CUSTOM_ORDERS",
                    "merchant_ids": ["mrch_a1_1"],
                }
                try:
                    if record.method == "POST":
                        answer = client.post(
                            "/v1/integrations", json=body, headers={"X-Request-Id": rid}
                        )
                    else:
                        answer = client.get("/v1/integrations", headers={"X-Request-Id": rid})
                    record.status = answer.status_code
                except httpx.HTTPError as exc:
                    record.error = type(exc).__name__
                    time.sleep(0.02)  # the server is gone: do not spin
                self.sent.append(record)

    def _probe(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                probe = Probe(time.monotonic())
                try:
                    probe.status = client.get("/readyz").status_code
                except httpx.HTTPError as exc:
                    probe.error = type(exc).__name__
                    time.sleep(0.02)
                self.probes.append(probe)


@pytest.fixture
def drain_url(database_maker: DatabaseMaker) -> Iterator[str]:
    _require_postgres()
    with database_maker.database("postgresql") as url:
        load_world(url, world("matrix"), key_secret=TEST_KEY_SECRET)
        yield url


def _waiting_on_locks(url: str) -> int:
    """Statements of PATCHes of this database stuck behind the row lock (the load's POSTs
    may queue behind them too, and must not be mistaken for them). PATCHes of one
    integration never share a statement, and a worker runs at most
    `batching.FLIGHTS` of them at once: the rest wait in the worker."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = 'cbstop' AND wait_event_type = 'Lock' "
            "AND datname = current_database() "
            "AND query LIKE '%/* cbstop integrations.update:%'"
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_in_flight_requests_and_exits_0(drain_url: str, workers: int) -> None:
    key = secret(world("matrix"), "key_org_a1")
    env = {"CBSTOP_DRAIN_TIMEOUT": str(DRAIN_TIMEOUT), "CBSTOP_STATEMENT_TIMEOUT": "20"}
    server = Server(drain_url, workers=workers, env=env)
    server.start()
    try:
        server.wait_ready()
        patched: list[int | str] = []

        def patch(client: httpx.Client) -> None:
            try:
                answer = client.patch("/v1/integrations/int_a1_orders", json={"name": "drained"})
                patched.append(answer.status_code)
            except httpx.HTTPError as exc:
                patched.append(type(exc).__name__)

        with (
            psycopg.connect(drain_url) as side,
            Load(server.url, key) as load,
        ):
            headers = {"Authorization": f"Bearer {key}"}
            clients = [
                httpx.Client(base_url=server.url, headers=headers, timeout=30)
                for _ in range(IN_FLIGHT)
            ]
            side.execute("SELECT 1 FROM integrations WHERE id = 'int_a1_orders' FOR UPDATE")
            stuck = [threading.Thread(target=patch, args=(c,)) for c in clients]
            for thread in stuck:
                thread.start()
            # Every PATCH is in flight, none answered: a worker's first FLIGHTS of them wait
            # on the lock in the database, the rest in the worker behind those.
            deadline = time.monotonic() + 10
            while _waiting_on_locks(drain_url) < FLIGHTS and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _waiting_on_locks(drain_url) >= FLIGHTS
            assert not patched, patched
            time.sleep(0.3)  # load runs alongside the stuck requests
            terminated = time.monotonic()
            server.signal(signal.SIGTERM)
            time.sleep(HELD)
            side.rollback()  # the stuck requests can now finish, inside the drain
            code = server.wait(timeout=DRAIN_TIMEOUT + 5)
            exited = time.monotonic() - terminated
            for thread in stuck:
                thread.join()
            for client in clients:
                client.close()
    finally:
        server.stop()
        stderr, output = server.stderr, server.output
        server.cleanup()
    logged = {}
    for line in stderr.splitlines():
        if line.startswith('{"time"') and '"request_id"' in line:
            entry = json.loads(line)
            logged[entry["request_id"]] = entry["status"]

    assert code == 0, output[-3000:]
    assert exited <= DRAIN_TIMEOUT + 2, exited
    assert patched == [200] * IN_FLIGHT
    # A request the server accepted (it logged it) either got its answer or nothing failed.
    failed = [
        s
        for s in load.sent
        if (s.status is not None and s.status >= 500)
        or (s.status is None and s.request_id in logged)
        or logged.get(s.request_id, 0) >= 500
    ]
    refused = [s for s in load.sent if s.status is None and s.request_id not in logged]
    answered = [s for s in load.sent if s.status is not None]
    after = [p for p in load.probes if p.sent >= terminated + 0.1]
    ready_after = [p for p in after if p.status == 200]
    not_ready = [p for p in load.probes if p.sent >= terminated and p.status == 503]
    print(
        f"\n[shutdown --workers {workers}] {len(answered)} answered, {len(refused)} refused "
        f"before being accepted, {len(failed)} accepted requests failed: {failed[:5]}; "
        f"in flight {patched}; exit {code} after {exited:.2f}s; /readyz after SIGTERM: "
        f"{len(not_ready)} x 503, {len(ready_after)} x 200"
    )
    assert not failed
    assert answered
    # Readiness is off at once: after SIGTERM a probe hears 503 (in the moment before uvicorn
    # closes idle connections) or cannot connect, never 200.
    assert not ready_after, "/readyz still answered 200 after SIGTERM"
    assert all(p.status in (None, 503) for p in after)


def test_sigterm_turns_readiness_off_before_anything_else() -> None:
    """The handler itself, without the race against uvicorn closing connections."""
    from cbstop.app import AppState
    from cbstop.server import DrainingServer, _states
    from cbstop.settings import Settings

    state = AppState(Settings(database_url="sqlite:///unused.db"))
    server = DrainingServer(uvicorn.Config(app=lambda *_: None))
    _states.append(state)
    try:
        server.handle_exit(signal.SIGTERM, None)
    finally:
        _states.remove(state)
    assert state.draining
    assert server.should_exit
    assert not server._captured_signals  # exits 0 instead of dying of the re-raised signal


class Pipelined:
    """One raw HTTP/1.1 connection, for sending requests back to back (pipelined)."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.file = self.sock.makefile("rb")

    def send(self, *requests: httpx.Request) -> None:
        """Write the requests in one go, without waiting for an answer."""
        raw = b""
        for request in requests:
            target = request.url.raw_path.decode()
            head = [f"{request.method} {target} HTTP/1.1", f"Host: {request.url.netloc.decode()}"]
            head += [f"{k}: {v}" for k, v in request.headers.items() if k.lower() != "host"]
            raw += ("\r\n".join(head) + "\r\n\r\n").encode() + request.read()
        self.sock.sendall(raw)

    def answer(self) -> httpx.Response:
        """The next answer on the connection."""
        status = int(self.file.readline().split()[1])
        headers: list[tuple[str, str]] = []
        while line := self.file.readline().rstrip(b"\r\n"):
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.strip(), value.strip()))
        length = int(httpx.Headers(headers)["content-length"])
        return httpx.Response(status, headers=headers, content=self.file.read(length))

    def closed(self) -> bool:
        """Whether the server has closed the connection (nothing more to read)."""
        return self.file.read(1) == b""

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _worker(response: httpx.Response) -> str:
    """Which worker answered: request ids it issues start with its own prefix."""
    return response.headers["x-request-id"].rsplit("-", 1)[0]


def test_sigterm_turns_every_workers_readiness_off_while_its_request_finishes(
    drain_url: str,
) -> None:
    """With --workers 2, a readiness probe each worker takes up after SIGTERM hears 503.

    Each worker holds a PATCH stuck behind a row lock, with a `/readyz` pipelined behind it
    on the same connection: the worker starts the probe only once the PATCH is answered,
    after SIGTERM. A worker running plain uvicorn (the supervisor's hook lost) answers 200.
    """
    key = secret(world("matrix"), "key_org_a1")
    env = {"CBSTOP_DRAIN_TIMEOUT": str(DRAIN_TIMEOUT), "CBSTOP_STATEMENT_TIMEOUT": "20"}
    server = Server(drain_url, workers=2, env=env)
    server.start()
    opened: list[Pipelined] = []
    try:
        server.wait_ready()
        # A connection to each worker (the second may still be starting when the first is
        # ready; the kernel hands each new connection to whichever worker accepts first).
        per_worker: dict[str, Pipelined] = {}
        probe = httpx.Request("GET", f"{server.url}/healthz")
        deadline = time.monotonic() + 30
        while len(per_worker) < 2 and time.monotonic() < deadline:
            connection = Pipelined(server.url)
            opened.append(connection)
            connection.send(probe)
            per_worker.setdefault(_worker(connection.answer()), connection)
            time.sleep(0.01)
        assert len(per_worker) == 2, f"{len(opened)} connections all went to one worker"
        patch = httpx.Request(
            "PATCH",
            f"{server.url}/v1/integrations/int_a1_orders",
            headers={"Authorization": f"Bearer {key}"},
            json={"name": "drained"},
        )
        readyz = httpx.Request("GET", f"{server.url}/readyz")
        with psycopg.connect(drain_url) as side:
            side.execute("SELECT 1 FROM integrations WHERE id = 'int_a1_orders' FOR UPDATE")
            for connection in per_worker.values():
                connection.send(patch, readyz)
            deadline = time.monotonic() + 10
            while _waiting_on_locks(drain_url) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _waiting_on_locks(drain_url) == 2
            server.signal(signal.SIGTERM)
            time.sleep(HELD)
            side.rollback()  # the stuck requests can now finish, inside the drain
        answers = {w: (c.answer(), c.answer(), c.closed()) for w, c in per_worker.items()}
        code = server.wait(timeout=DRAIN_TIMEOUT + 5)
    finally:
        for connection in opened:
            connection.close()
        server.stop()
        output = server.output
        server.cleanup()
    for worker, (patched, probed, closed) in answers.items():
        assert (patched.status_code, _worker(patched)) == (200, worker), patched.text
        assert (probed.status_code, envelope_code(probed), _worker(probed)) == (
            503,
            "SERVICE_UNAVAILABLE",
            worker,
        ), probed.text
        assert closed  # and the worker closed the connection, draining
    assert code == 0, output[-3000:]


@pytest.fixture(params=["postgresql", "sqlite"])
def stuck_url(request: pytest.FixtureRequest, database_maker: DatabaseMaker) -> Iterator[str]:
    if request.param == "postgresql":
        _require_postgres()
    with database_maker.database(request.param) as url:
        load_world(url, world("matrix"), key_secret=TEST_KEY_SECRET)
        yield url


@contextmanager
def _write_lock_held(url: str) -> Iterator[None]:
    """Another session holds what a PATCH of int_a1_orders needs until the block ends: the
    row's lock on PostgreSQL, the file's write lock on SQLite."""
    if url.startswith("postgresql"):
        with psycopg.connect(url) as row_locker:
            row_locker.execute("SELECT 1 FROM integrations WHERE id = 'int_a1_orders' FOR UPDATE")
            yield
            row_locker.rollback()
    else:
        file_locker = sqlite3.connect(sqlite_path(url), isolation_level=None, timeout=0)
        try:
            file_locker.execute("BEGIN IMMEDIATE")
            yield
            file_locker.execute("ROLLBACK")
        finally:
            file_locker.close()


def test_a_request_still_running_when_the_drain_timeout_expires_gets_503_in_the_envelope(
    stuck_url: str,
) -> None:
    """Not uvicorn's plain-text 500 without `X-Request-Id`, and no traceback in the log."""
    key = secret(world("matrix"), "key_org_a1")
    env = {"CBSTOP_DRAIN_TIMEOUT": "1", "CBSTOP_STATEMENT_TIMEOUT": "30"}
    server = Server(stuck_url, env=env)
    server.start()
    try:
        server.wait_ready()
        before = snapshot(stuck_url)
        answers: list[httpx.Response | str] = []

        def patch() -> None:
            headers = {"Authorization": f"Bearer {key}", "X-Request-Id": "stuck-patch"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
                try:
                    answers.append(client.patch(ONE, json={"name": "never"}))
                except httpx.HTTPError as exc:
                    answers.append(type(exc).__name__)

        with _write_lock_held(stuck_url):
            stuck = threading.Thread(target=patch)
            stuck.start()
            time.sleep(1.0)  # the PATCH is waiting for the lock
            assert not answers, answers
            terminated = time.monotonic()
            server.signal(signal.SIGTERM)
            stuck.join(timeout=20)
            answered = time.monotonic() - terminated
            code = server.wait(timeout=20)
        after = snapshot(stuck_url)
    finally:
        server.stop()
        stderr = server.stderr
        server.cleanup()

    print(f"\n[drain timeout] answered {answered:.2f}s after SIGTERM: {answers}")
    assert len(answers) == 1 and isinstance(answers[0], httpx.Response), answers
    answer = answers[0]
    assert answer.status_code == 503, answer.text
    assert envelope_code(answer) == "SERVICE_UNAVAILABLE"
    assert answer.headers["x-request-id"] == "stuck-patch"
    assert answer.headers["retry-after"] == "1"
    assert answer.headers["connection"] == "close"
    assert answered < 5, answered
    assert code == 0, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "cut short: the drain timeout expired" in stderr
    assert after == before
