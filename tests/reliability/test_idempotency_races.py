"""Idempotency-Keys against real `cbstop serve` processes and real databases (CONTRACT 3.1):
a burst of duplicates makes one integration, on one instance or three; a server killed in the
middle of a keyed POST leaves at most one, and the retry says which; a key in flight past 5 s
is 409 `IDEMPOTENCY_KEY_IN_USE`, a shorter one is waited for and replayed; expired keys are
purged and then count as new.

To stop a keyed POST "in the middle" the test holds, from its own database session, a lock
the write needs: on PostgreSQL org_a1's `organisations` row `FOR UPDATE` (the new
integration's foreign keys take `FOR KEY SHARE` on it, so the create statement waits inside
the database), on SQLite the file's write lock (`BEGIN IMMEDIATE`).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from typing import Any

import httpx
import psycopg
import pytest

from cbstop.db.database import sqlite_path
from cbstop.world.loader import load_world
from tests.integrations.helpers import assert_error, create_body, nothing_changes, secret, world
from tests.reliability.processes import Server, running
from tests.support import TEST_KEY_SECRET, query

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("servers")]

ORG_A1 = {"Authorization": f"Bearer {secret(world('matrix'), 'key_org_a1')}"}
OWNER = "organisation:org_a1"  # the owner of key_org_a1's Idempotency-Keys
IN_USE_AFTER = 5.0  # seconds a keyed request waits for its key's first request (CONTRACT 3.1)
BURST = 50
ROUNDS = 3  # bursts per test, each with its own key: the duplicates overlap in only some
# A statement stuck behind the test's lock must outlive the test's wait, not the default 1.5 s.
PATIENT = {"CBSTOP_STATEMENT_TIMEOUT": "30"}


@pytest.fixture
def world_url(database_url: str) -> str:
    """A fresh database of this run's dialect holding the matrix world."""
    load_world(database_url, world("matrix"), key_secret=TEST_KEY_SECRET)
    return database_url


@pytest.fixture
def pg_world_url(postgres_url: str) -> str:
    """A fresh PostgreSQL database holding the matrix world."""
    load_world(postgres_url, world("matrix"), key_secret=TEST_KEY_SECRET)
    return postgres_url


# --- helpers -----------------------------------------------------------------------------------


def _fresh_key() -> str:
    return f"race-{uuid.uuid4().hex}"


def _keyed(key: str) -> dict[str, str]:
    return {**ORG_A1, "Idempotency-Key": key}


def _all_at_once(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """Run the calls on as many threads, released together by a barrier."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], httpx.Response]) -> httpx.Response:
        barrier.wait(timeout=10)
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def _named(url: str, name: str) -> list[str]:
    """The ids of the integrations stored with that name."""
    return [row[0] for row in query(url, "SELECT id FROM integrations WHERE name = ?", name)]


def _stored(url: str, key: str, owner: str = OWNER) -> int:
    """How many answers are stored under (owner, key)."""
    sql = 'SELECT count(*) FROM idempotency_keys WHERE owner = ? AND "key" = ?'
    return int(query(url, sql, owner, key)[0][0])


def _total(url: str) -> int:
    return int(query(url, "SELECT count(*) FROM integrations")[0][0])


def _listed_count(base_url: str) -> int:
    with httpx.Client(base_url=base_url, headers=ORG_A1, timeout=10) as client:
        answer = client.get("/v1/integrations")
    assert answer.status_code == 200, answer.text
    count: int = answer.json()["count"]
    return count


def _assert_one_write_replayed(responses: list[httpx.Response], name: str) -> str:
    """Every answer is the same 201; exactly one is fresh, the rest replay it. Its id."""
    assert [r.status_code for r in responses] == [201] * len(responses), [
        (r.status_code, r.text) for r in responses
    ]
    assert len({r.content for r in responses}) == 1, {r.content for r in responses}
    first = responses[0]
    new_id: str = first.json()["id"]
    assert first.json()["name"] == name
    assert {r.headers.get("location") for r in responses} == {f"/v1/integrations/{new_id}"}
    assert {r.headers.get("etag") for r in responses} == {'"1"'}
    fresh = [r for r in responses if "idempotent-replayed" not in r.headers]
    replayed = [r.headers.get("idempotent-replayed") for r in responses if r not in fresh]
    assert len(fresh) == 1, [dict(r.headers) for r in responses]
    assert replayed == ["true"] * (len(responses) - 1)
    return new_id


def _burst(urls: list[str], database_url: str) -> None:
    """50 keyed POSTs, one key and one body, spread round-robin over `urls`: one write.

    Every client has its connection open and its key resolved first (a GET), so the POSTs
    reach the database together rather than queued behind the key lookups."""
    key, name = _fresh_key(), f"Burst {uuid.uuid4().hex[:8]}"
    body = create_body(name=name)
    before_total, before_listed = _total(database_url), _listed_count(urls[0])
    clients = [
        httpx.Client(base_url=urls[n % len(urls)], headers=_keyed(key), timeout=30)
        for n in range(BURST)
    ]
    try:
        for client in clients:
            assert client.get("/v1/integrations").status_code == 200
        responses = _all_at_once([partial(c.post, "/v1/integrations", json=body) for c in clients])
    finally:
        for client in clients:
            client.close()

    new_id = _assert_one_write_replayed(responses, name)
    assert _named(database_url, name) == [new_id]
    assert _total(database_url) == before_total + 1
    assert _stored(database_url, key) == 1
    for url in urls:
        assert _listed_count(url) == before_listed + 1


def _wait_for_sessions(url: str, *, waiting: bool, timeout: float = 10.0) -> None:
    """Until a cbstop session of this database waits on a lock (`waiting`), or until no cbstop
    session is left at all (not `waiting`: a killed server's backends have ended)."""
    if waiting:
        sql = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'cbstop' AND wait_event_type = 'Lock'"
        )
    else:
        sql = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'cbstop' AND pid <> pg_backend_pid()"
        )
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(sql).fetchone()
            count = int(row[0]) if row else 0
            if (count > 0) == waiting:
                return
            time.sleep(0.02)
    raise AssertionError(f"cbstop sessions never {'waited' if waiting else 'ended'}")


@contextmanager
def _creates_blocked(url: str) -> Iterator[None]:
    """Another session holds what creating an integration in org_a1 needs, until the block
    ends: org_a1's row `FOR UPDATE` on PostgreSQL, the file's write lock on SQLite."""
    if url.startswith("postgresql"):
        with psycopg.connect(url) as locker:
            locker.execute("SELECT 1 FROM organisations WHERE id = 'org_a1' FOR UPDATE")
            yield
            locker.rollback()
        return
    locker_file = sqlite3.connect(sqlite_path(url), isolation_level=None, timeout=0)
    try:
        locker_file.execute("BEGIN IMMEDIATE")
        yield
        locker_file.execute("ROLLBACK")
    finally:
        locker_file.close()


class Background:
    """One request on its own thread; its answer (or the transport error) and when it came."""

    def __init__(self, call: Callable[[], httpx.Response]) -> None:
        self.answer: httpx.Response | None = None
        self.error: str | None = None
        self.started = time.monotonic()
        self.took = 0.0
        self._call = call
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.answer = self._call()
        except httpx.HTTPError as exc:
            self.error = type(exc).__name__
        self.took = time.monotonic() - self.started

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def finish(self, timeout: float = 30.0) -> None:
        """Wait for the answer or the transport error."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the request never ended"

    def join(self, timeout: float = 30.0) -> httpx.Response:
        """Wait for the answer, which must be one."""
        self.finish(timeout)
        assert self.answer is not None, self.error
        return self.answer


def _post(base_url: str, key: str, body: dict[str, Any]) -> Callable[[], httpx.Response]:
    def call() -> httpx.Response:
        with httpx.Client(base_url=base_url, headers=_keyed(key), timeout=30) as client:
            return client.post("/v1/integrations", json=body)

    return call


# --- 1, 2: bursts of one key ------------------------------------------------------------------


def test_fifty_concurrent_posts_with_one_key_make_one_integration(world_url: str) -> None:
    with running(world_url, workers=2) as server:
        for _ in range(ROUNDS):
            _burst([server.url], world_url)


def test_fifty_concurrent_posts_with_one_key_over_three_instances_make_one_integration(
    pg_world_url: str,
) -> None:
    servers = [Server(pg_world_url) for _ in range(3)]
    for server in servers:
        server.start()
    try:
        for server in servers:
            server.wait_ready()
        for _ in range(ROUNDS):
            _burst([s.url for s in servers], pg_world_url)
    finally:
        for server in servers:
            server.stop()
            server.cleanup()


# --- 3: SIGKILL in the middle -----------------------------------------------------------------


def test_a_server_killed_mid_post_and_the_retry_on_a_new_one_make_exactly_one(
    world_url: str,
) -> None:
    key, name = _fresh_key(), f"Killed {uuid.uuid4().hex[:8]}"
    body = create_body(name=name)
    before_total = _total(world_url)
    server = Server(world_url, env=PATIENT)
    server.start()
    try:
        server.wait_ready()
        with _creates_blocked(world_url):
            stuck = Background(_post(server.url, key, body))
            if world_url.startswith("postgresql"):
                _wait_for_sessions(world_url, waiting=True)
            else:
                time.sleep(1.0)  # the POST waits for the file's write lock
            assert not stuck.done, (stuck.answer, stuck.error)
            assert server.proc is not None
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.wait(timeout=10)
            stuck.finish(timeout=10)
        if world_url.startswith("postgresql"):
            _wait_for_sessions(world_url, waiting=False)
    finally:
        server.stop()
        server.cleanup()
    assert stuck.answer is None and stuck.error is not None, (stuck.answer, stuck.error)
    left = _named(world_url, name)
    assert len(left) <= 1, left
    assert _stored(world_url, key) == len(left)  # the key's answer and the write are one

    with running(world_url) as restarted:
        retried = _post(restarted.url, key, body)()

    assert retried.status_code == 201, retried.text
    assert _named(world_url, name) == [retried.json()["id"]]
    assert _total(world_url) == before_total + 1
    assert _stored(world_url, key) == 1
    if left:
        assert retried.headers.get("idempotent-replayed") == "true"
        assert retried.json()["id"] == left[0]
    else:
        assert "idempotent-replayed" not in retried.headers
    print(f"\n[sigkill] the kill left {'the write' if left else 'nothing'}; the retry agreed")


# --- 4: in flight past 5 s, and shorter -------------------------------------------------------


def _assert_in_use(answer: httpx.Response) -> None:
    assert_error(answer, 409, "IDEMPOTENCY_KEY_IN_USE", "Idempotency-Key")
    assert answer.headers.get("retry-after") == "1"
    assert "idempotent-replayed" not in answer.headers


def test_a_key_in_flight_past_5s_is_409_in_use_and_free_once_released(world_url: str) -> None:
    """PostgreSQL: another transaction inserted the key's row and has not committed. SQLite:
    another connection holds the file's write lock for 7 s."""
    key, name = _fresh_key(), f"In use {uuid.uuid4().hex[:8]}"
    body = create_body(name=name)
    with running(world_url) as server:
        if world_url.startswith("postgresql"):
            with psycopg.connect(world_url) as holder:
                holder.execute(
                    "INSERT INTO idempotency_keys (owner, key, fingerprint, created_at, "
                    "status_code, body, location, etag) VALUES (%s, %s, %s, %s, 201, %s, NULL, "
                    "NULL)",
                    (OWNER, key, b"\x00" * 32, time.time_ns() // 1000, b"{}"),
                )
                with nothing_changes(world_url):
                    started = time.monotonic()
                    answer = _post(server.url, key, body)()
                    took = time.monotonic() - started
                holder.rollback()
        else:
            with nothing_changes(world_url):
                with _creates_blocked(world_url):
                    waiting = Background(_post(server.url, key, body))
                    time.sleep(7.0)
                    assert waiting.done, "the keyed POST still waited after 7 s"
                answer, took = waiting.join(), waiting.took
        _assert_in_use(answer)
        assert 4.5 <= took < 9.0, took
        assert _named(world_url, name) == []
        assert _stored(world_url, key) == 0

        retried = _post(server.url, key, body)()

    assert retried.status_code == 201, retried.text
    assert "idempotent-replayed" not in retried.headers
    assert _named(world_url, name) == [retried.json()["id"]]
    assert _stored(world_url, key) == 1


def test_a_duplicate_in_flight_under_5s_waits_and_replays(world_url: str) -> None:
    """Two keyed POSTs, one key and one body, sent while creates are blocked for 1.5 s."""
    key, name = _fresh_key(), f"Waited {uuid.uuid4().hex[:8]}"
    body = create_body(name=name)
    before_total = _total(world_url)
    with running(world_url, env=PATIENT) as server:
        with _creates_blocked(world_url):
            first = Background(_post(server.url, key, body))
            time.sleep(0.2)
            second = Background(_post(server.url, key, body))
            time.sleep(1.3)
            assert not first.done and not second.done, (first.answer, second.answer)
        answers = [first.join(), second.join()]

    new_id = _assert_one_write_replayed(answers, name)
    assert _named(world_url, name) == [new_id]
    assert _total(world_url) == before_total + 1
    assert _stored(world_url, key) == 1
    assert max(first.took, second.took) < IN_USE_AFTER, (first.took, second.took)


# --- 5: purge ---------------------------------------------------------------------------------


def test_expired_keys_are_purged_and_then_count_as_new(world_url: str) -> None:
    key = _fresh_key()
    first_body = create_body(name=f"Purged {uuid.uuid4().hex[:8]}")
    second_body = create_body(name=f"After {uuid.uuid4().hex[:8]}", merchant_ids=["mrch_a1_2"])
    env = {"CBSTOP_IDEMPOTENCY_TTL": "1", "CBSTOP_IDEMPOTENCY_PURGE_INTERVAL": "1"}
    with running(world_url, env=env) as server:
        created = _post(server.url, key, first_body)()
        assert created.status_code == 201, created.text
        assert _stored(world_url, key) == 1

        deadline = time.monotonic() + 10
        while _stored(world_url, key) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _stored(world_url, key) == 0, "the expired key was never purged"

        reused = _post(server.url, key, second_body)()

    assert reused.status_code == 201, reused.text
    assert "idempotent-replayed" not in reused.headers
    assert reused.json()["name"] == second_body["name"]
    assert reused.json()["id"] != created.json()["id"]
    assert _named(world_url, first_body["name"]) == [created.json()["id"]]
    assert _named(world_url, second_body["name"]) == [reused.json()["id"]]
    assert _stored(world_url, key) == 1
