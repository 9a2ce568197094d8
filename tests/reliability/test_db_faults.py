"""Every database fault is a 503: a PostgreSQL that refuses new connections (not accepting
them, renamed, dropped, the role may not log in, too many connections) or will not write (a
read-only database, a hot standby) answers 503 SERVICE_UNAVAILABLE with Retry-After in the
envelope, `/readyz` included; the outage is logged at most once a second, without
tracebacks; nothing is written; the service recovers by itself. A statement the schema
refuses (a defect, a migration not run) stays a 500."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import psycopg
import pytest

from cbstop.db.migrate import migrate
from cbstop.db.postgres import PostgresDatabase, unavailable, unavailable_on_connect
from cbstop.errors import ServiceUnavailable
from cbstop.world.loader import load_world
from tests.conftest import _require_postgres
from tests.integrations.helpers import create_body, secret, world
from tests.reliability.processes import (
    AS_POSTGRES,
    Cluster,
    Server,
    cluster,
    envelope_code,
    free_port,
    running,
)
from tests.support import POSTGRES_SERVER, TEST_KEY_SECRET, DatabaseMaker, make_settings, snapshot

ANSWER_WITHIN = 2.0  # seconds: a 503 comes at once, not after a hang
TRAFFIC = 2.5  # seconds of requests during the fault
RECOVERY = 10.0  # seconds the service may take to serve again once the fault is undone


@dataclass
class Target:
    """A migrated database with the matrix world, and a role of its own that the server
    connects as (a role can be refused login or limited without touching the shared
    server's settings)."""

    name: str
    role: str

    @property
    def admin_url(self) -> str:
        return f"{POSTGRES_SERVER}/{self.name}"

    @property
    def url(self) -> str:
        return POSTGRES_SERVER.replace("postgres@", f"{self.role}@", 1) + f"/{self.name}"


def _admin(sql: str) -> None:
    with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def _terminate(target: Target) -> None:
    """End every session of the target's role (the server's pool), and wait until those
    sessions are gone: pg_terminate_backend only signals, and a backend still alive would serve.

    Waits for the ended sessions' pids, not for the role to have none: the server's event pump
    and webhook deliverer look at the database every few tenths of a second, so the pool opens
    new sessions (which see the database's new settings) while the old ones are still exiting.
    """
    with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as conn:
        sessions = "SELECT pid FROM pg_stat_activity WHERE usename = %s"
        ended = [pid for (pid,) in conn.execute(sessions, (target.role,)).fetchall()]
        # Apart: in one WHERE the planner may call pg_terminate_backend before filtering.
        conn.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (ended,))
        deadline = time.monotonic() + 5
        alive = "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)"
        while conn.execute(alive, (ended,)).fetchone() != (0,):
            assert time.monotonic() < deadline, "the role's sessions outlived pg_terminate_backend"
            time.sleep(0.02)


@pytest.fixture
def target(database_maker: DatabaseMaker) -> Iterator[Target]:
    _require_postgres()
    role = f"cbstop_fault_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE ROLE "{role}" LOGIN')
    try:
        with database_maker.database("postgresql") as url:
            load_world(url, world("matrix"), key_secret=TEST_KEY_SECRET)
            made = Target(url.rsplit("/", 1)[1], role)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f'GRANT USAGE ON SCHEMA public TO "{role}"')
                conn.execute(f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role}"')
            try:
                yield made
            finally:
                _restore(made)
    finally:
        _admin(f'DROP ROLE IF EXISTS "{role}"')


def _restore(t: Target) -> None:
    """Undo whatever fault a failed test left, so the database and the role can be dropped."""
    with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as conn:
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
    if f"{t.name}_moved" in names:
        _rename_back(t)
    if t.name in names or f"{t.name}_moved" in names:
        _accepting(t)
        _connections_again(t)
    _login(t)


# Each fault: (apply, undo); None as undo means the database is gone for good.
Fault = tuple[Callable[[Target], None], Callable[[Target], None] | None]


def _not_accepting(t: Target) -> None:
    _admin(f'ALTER DATABASE "{t.name}" ALLOW_CONNECTIONS false')
    _terminate(t)


def _accepting(t: Target) -> None:
    _admin(f'ALTER DATABASE "{t.name}" ALLOW_CONNECTIONS true')


def _rename(t: Target) -> None:
    _not_accepting(t)
    _admin(f'ALTER DATABASE "{t.name}" RENAME TO "{t.name}_moved"')
    _admin(f'ALTER DATABASE "{t.name}_moved" ALLOW_CONNECTIONS true')


def _rename_back(t: Target) -> None:
    _admin(f'ALTER DATABASE "{t.name}_moved" RENAME TO "{t.name}"')


def _drop(t: Target) -> None:
    _admin(f'DROP DATABASE "{t.name}" WITH (FORCE)')


def _no_login(t: Target) -> None:
    _admin(f'ALTER ROLE "{t.role}" NOLOGIN')
    _terminate(t)


def _login(t: Target) -> None:
    _admin(f'ALTER ROLE "{t.role}" LOGIN')


def _no_connection_left(t: Target) -> None:
    _admin(f'ALTER DATABASE "{t.name}" CONNECTION LIMIT 0')
    _terminate(t)


def _connections_again(t: Target) -> None:
    _admin(f'ALTER DATABASE "{t.name}" CONNECTION LIMIT -1')


FAULTS: dict[str, Fault] = {
    "not accepting connections (55000)": (_not_accepting, _accepting),
    "renamed (3D000)": (_rename, _rename_back),
    "dropped (3D000)": (_drop, None),
    "role may not log in (28000)": (_no_login, _login),
    "too many connections (53300)": (_no_connection_left, _connections_again),
}


@dataclass
class Answer:
    method: str
    path: str
    rid: str
    seconds: float
    response: httpx.Response


# Every kind of request: the reads, the writes, readiness.
REQUESTS: list[tuple[str, str, dict[str, object] | None]] = [
    ("GET", "/v1/integrations/int_a1_orders", None),
    ("GET", "/v1/integrations", None),
    ("POST", "/v1/integrations", create_body(name="Written in the fault")),
    ("PATCH", "/v1/integrations/int_a1_orders", {"name": "Renamed in the fault"}),
    ("GET", "/readyz", None),
]


def _send_for(server: Server, seconds: float) -> tuple[list[Answer], float]:
    """Every kind of request, over and over for `seconds`; (answers, seconds taken)."""
    headers = {"Authorization": f"Bearer {secret(world('matrix'), 'key_org_a1')}"}
    answers: list[Answer] = []
    started = time.monotonic()
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
        n = 0
        while time.monotonic() - started < seconds:
            for method, path, body in REQUESTS:
                n += 1
                rid = f"fault-{n}"
                sent = time.monotonic()
                response = client.request(method, path, json=body, headers={"X-Request-Id": rid})
                answers.append(Answer(method, path, rid, time.monotonic() - sent, response))
            time.sleep(0.05)
    return answers, time.monotonic() - started


def _assert_unavailable(answer: Answer) -> None:
    response = answer.response
    what = f"{answer.method} {answer.path}: {response.status_code} {response.text[:200]}"
    assert response.status_code == 503, what
    assert envelope_code(response) == "SERVICE_UNAVAILABLE", what
    assert response.headers.get("retry-after") == "1", what
    assert response.headers.get("x-request-id") == answer.rid, what
    assert response.headers["content-type"].startswith("application/json"), what
    assert answer.seconds < ANSWER_WITHIN, f"{what} took {answer.seconds:.2f}s"


def _assert_logged_once_a_second(stderr: str, seconds: float, answered_503: int) -> int:
    assert "Traceback" not in stderr, stderr[-3000:]
    # The requests' line ("database unavailable: <cause>"), at most once a second.
    warnings = stderr.count("database unavailable:")
    assert 1 <= warnings <= seconds + 1.5, (warnings, seconds)
    assert warnings < answered_503
    # The background tasks' (events, webhooks: "database unavailable while <doing>"), each
    # at most once every 10 s.
    background = stderr.count("database unavailable while")
    assert background <= 4 * (seconds / 10 + 1), (background, seconds)
    return warnings


def _wait_ready(server: Server, timeout: float = RECOVERY) -> float:
    started = time.monotonic()
    with httpx.Client(base_url=server.url, timeout=5) as client:
        while time.monotonic() - started < timeout:
            if client.get("/readyz").status_code == 200:
                return time.monotonic() - started
            time.sleep(0.1)
    raise AssertionError(f"/readyz not 200 within {timeout}s of the fault's end")


@pytest.mark.slow
@pytest.mark.xdist_group("servers")
@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_database_that_refuses_connections_answers_503_everywhere_and_recovers(
    target: Target, fault: str
) -> None:
    apply, undo = FAULTS[fault]
    before = snapshot(target.admin_url)
    with running(target.url) as server:
        apply(target)
        answers, took = _send_for(server, TRAFFIC)
        for answer in answers:
            _assert_unavailable(answer)
        time.sleep(0.2)
        warnings = _assert_logged_once_a_second(server.stderr, took, len(answers))
        if undo is None:
            print(
                f"\n[{fault}] {len(answers)} answers, all 503; {warnings} warnings in {took:.1f}s"
            )
            return
        undo(target)
        recovered = _wait_ready(server)
        with httpx.Client(base_url=server.url, timeout=5) as client:
            headers = {"Authorization": f"Bearer {secret(world('matrix'), 'key_org_a1')}"}
            assert client.get("/v1/integrations/int_a1_orders", headers=headers).status_code == 200
    assert snapshot(target.admin_url) == before
    print(
        f"\n[{fault}] {len(answers)} answers, all 503 in the envelope, slowest "
        f"{max(a.seconds for a in answers) * 1000:.0f} ms; {warnings} warnings in {took:.1f}s; "
        f"ready again {recovered:.2f}s after the fault ended"
    )


@pytest.mark.slow
@pytest.mark.xdist_group("servers")
def test_a_read_only_database_answers_writes_503_serves_reads_and_is_not_ready(
    target: Target,
) -> None:
    headers = {"Authorization": f"Bearer {secret(world('matrix'), 'key_org_a1')}"}
    before = snapshot(target.admin_url)
    with (
        running(target.url) as server,
        httpx.Client(base_url=server.url, headers=headers, timeout=10) as client,
    ):
        # What a demoted primary or `default_transaction_read_only` looks like to a session.
        _admin(f'ALTER DATABASE "{target.name}" SET default_transaction_read_only = on')
        _terminate(target)
        answers, took = _send_for(server, TRAFFIC)
        unavailable_answers = 0
        for answer in answers:
            if answer.method == "GET" and answer.path.startswith("/v1/"):
                assert answer.response.status_code == 200, answer.response.text
            else:  # the writes and /readyz
                _assert_unavailable(answer)
                unavailable_answers += 1
        time.sleep(0.2)
        warnings = _assert_logged_once_a_second(server.stderr, took, unavailable_answers)
        assert "read-only" in server.stderr
        assert snapshot(target.admin_url) == before

        _admin(f'ALTER DATABASE "{target.name}" RESET default_transaction_read_only')
        _terminate(target)
        recovered = _wait_ready(server)
        created = client.post("/v1/integrations", json=create_body(name="After the fault"))
        assert created.status_code == 201, created.text
    print(
        f"\n[read-only] {len(answers)} answers: reads 200, writes and /readyz 503; "
        f"{warnings} warnings in {took:.1f}s; ready again {recovered:.2f}s after"
    )


@pytest.mark.slow
@pytest.mark.xdist_group("servers")
def test_a_statement_the_schema_refuses_is_a_500_not_an_outage(target: Target) -> None:
    """A missing table (42P01) is a defect or a migration not run, not the database being
    down: 500 with its traceback in the log, while /readyz stays 200."""
    headers = {"Authorization": f"Bearer {secret(world('matrix'), 'key_org_a1')}"}
    with (
        running(target.url) as server,
        httpx.Client(base_url=server.url, headers=headers, timeout=10) as client,
    ):
        assert client.get("/v1/integrations/int_a1_orders").status_code == 200
        with psycopg.connect(target.admin_url, autocommit=True) as conn:
            conn.execute("ALTER TABLE integration_merchants RENAME TO integration_merchants_x")
        try:
            answer = client.get("/v1/integrations/int_a1_orders")
            assert answer.status_code == 500, answer.text
            assert envelope_code(answer) == "INTERNAL_ERROR"
            assert "retry-after" not in answer.headers
            assert client.get("/readyz").status_code == 200
            time.sleep(0.2)
            assert "UndefinedTableError" in server.stderr
            assert "database unavailable" not in server.stderr
        finally:
            with psycopg.connect(target.admin_url, autocommit=True) as conn:
                conn.execute("ALTER TABLE integration_merchants_x RENAME TO integration_merchants")


@pytest.mark.parametrize(
    ("exc", "at_connect", "expected"),
    [
        (asyncpg.InvalidCatalogNameError("gone"), False, True),  # 3D000
        (asyncpg.InvalidAuthorizationSpecificationError("no login"), False, True),  # 28000
        (asyncpg.InvalidPasswordError("wrong"), False, True),  # 28P01
        (asyncpg.TooManyConnectionsError("full"), False, True),  # 53300
        (asyncpg.DiskFullError("full"), False, True),  # 53100
        (asyncpg.AdminShutdownError("bye"), False, True),  # 57P01
        (asyncpg.QueryCanceledError("timeout"), False, True),  # 57014
        (asyncpg.PostgresIOError("io"), False, True),  # 58030
        (asyncpg.ReadOnlySQLTransactionError("ro"), False, True),  # 25006
        (asyncpg.DeadlockDetectedError("dl"), False, True),  # 40P01
        (asyncpg.ConnectionDoesNotExistError("closed"), False, True),
        (ConnectionResetError(), False, True),
        (TimeoutError(), False, True),
        (asyncpg.PostgresSyntaxError("typo"), False, False),  # 42601: our defect
        (asyncpg.UndefinedTableError("missing"), False, False),  # 42P01
        (asyncpg.UniqueViolationError("dup"), False, False),  # 23505
        (asyncpg.ObjectNotInPrerequisiteStateError("state"), False, False),  # 55000
        # ...but the same refusal while connecting is the database not accepting connections.
        (asyncpg.ObjectNotInPrerequisiteStateError("not accepting"), True, True),
        (KeyError("a defect of ours"), True, False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_unavailability_is_told_by_sqlstate_class_and_connection_level_failure(
    exc: BaseException, at_connect: bool, expected: bool
) -> None:
    decide = unavailable_on_connect if at_connect else unavailable
    assert decide(exc) is expected


def test_a_syntax_error_stays_a_defect_and_keeps_its_connection(postgres_url: str) -> None:
    async def scenario() -> None:
        db = await PostgresDatabase.open(postgres_url, make_settings(postgres_url))
        try:
            with pytest.raises(asyncpg.PostgresSyntaxError):
                async with db.connection() as conn:
                    await conn.fetchval("SELEC 1")
            with pytest.raises(asyncpg.PostgresSyntaxError):
                async with db.transaction(write=True) as conn:
                    await conn.execute("UPDAT integrations SET name = 'x'")
            await db.ping()  # still answers, on the same pool
            assert db.pool_stats() == (0, 0)
        finally:
            await db.close()

    before = snapshot(postgres_url)
    asyncio.run(scenario())
    assert snapshot(postgres_url) == before


def test_a_read_only_database_is_not_ready(target: Target) -> None:
    async def scenario() -> None:
        db = await PostgresDatabase.open(target.admin_url, make_settings(target.admin_url))
        try:
            await db.ping()
            async with db.connection() as conn:
                await conn.execute("SET default_transaction_read_only = on")
            with pytest.raises(ServiceUnavailable) as raised:
                await db.ping()
            assert "read-only" in str(raised.value.__cause__)
            await db.ping()  # the read-only session was discarded, not reused
        finally:
            await db.close()

    asyncio.run(scenario())


class Standby:
    """A hot standby of a throwaway cluster, streaming from it (pg_basebackup -R)."""

    def __init__(self, primary: Cluster) -> None:
        bin_dir = Path(shutil.which("initdb") or "initdb").resolve().parent
        self.dir = primary.dir / "standby"
        self.port = free_port()
        self._pg_ctl = str(bin_dir / "pg_ctl")
        self._run(
            [
                str(bin_dir / "pg_basebackup"),
                *("-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres"),
                *("-D", str(self.dir), "-R", "-X", "stream", "-c", "fast"),
            ]
        )
        options = f"-p {self.port} -k {primary.dir} -c listen_addresses=127.0.0.1"
        log = str(primary.dir / "standby.log")
        self._run([self._pg_ctl, "-D", str(self.dir), "-o", options, "-l", log, "-w", "start"])

    def _run(self, argv: list[str]) -> None:
        done = subprocess.run([*AS_POSTGRES, *argv], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr or done.stdout

    def promote(self) -> None:
        self._run([self._pg_ctl, "-D", str(self.dir), "-w", "promote"])

    def destroy(self) -> None:
        subprocess.run(
            [*AS_POSTGRES, self._pg_ctl, "-D", str(self.dir), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )


@contextmanager
def serving(url: str) -> Iterator[Server]:
    """A `cbstop serve` that may never be ready: started, alive (`/healthz`), stopped after."""
    server = Server(url)
    server.start()
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=server.url, timeout=2) as client:
            while True:
                assert server.proc is not None and server.proc.poll() is None, server.output
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the server never answered /healthz"
                time.sleep(0.05)
        yield server
    finally:
        server.stop()
        server.cleanup()


@pytest.mark.slow
@pytest.mark.xdist_group("servers")
def test_on_a_standby_reads_answer_writes_and_readyz_are_503_until_it_is_promoted() -> None:
    matrix = world("matrix")
    headers = {"Authorization": f"Bearer {secret(matrix, 'key_org_a1')}"}
    with cluster() as primary:
        url = primary.create_database("cbstop")
        migrate(url)
        load_world(url, matrix, key_secret=TEST_KEY_SECRET)
        standby = Standby(primary)
        try:
            standby_url = f"postgresql://postgres@127.0.0.1:{standby.port}/cbstop"
            before = snapshot(standby_url)
            with (
                serving(standby_url) as server,
                httpx.Client(base_url=server.url, headers=headers, timeout=10) as client,
            ):
                answers, took = _send_for(server, TRAFFIC)
                for answer in answers:
                    if answer.method == "GET" and answer.path.startswith("/v1/"):
                        assert answer.response.status_code == 200, answer.response.text
                    else:
                        _assert_unavailable(answer)
                time.sleep(0.2)
                stderr = server.stderr
                _assert_logged_once_a_second(stderr, took, len(answers))
                assert "standby" in stderr or "read-only" in stderr
                assert snapshot(standby_url) == before

                standby.promote()  # the failover: the same server now takes writes
                recovered = _wait_ready(server)
                created = client.post("/v1/integrations", json=create_body(name="Promoted"))
                assert created.status_code == 201, created.text
        finally:
            standby.destroy()
    print(f"\n[standby] reads 200, writes and /readyz 503; ready {recovered:.2f}s after promotion")
