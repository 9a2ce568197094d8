"""SQLite's write lock, held by another process (a `cbstop load`, another worker): a write
waits for it without holding up the process's reads, `/readyz` or the event loop, and then
completes, or answers 503 once the lock outlasts its wait."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from cbstop.db.database import sqlite_path
from cbstop.db.sqlite import LOCK_WAIT, SqliteDatabase
from cbstop.errors import ServiceUnavailable
from cbstop.world.loader import load_world
from tests.integrations.helpers import create_body, secret, world
from tests.reliability.processes import envelope_code, running
from tests.support import TEST_KEY_SECRET, DatabaseMaker, query, snapshot

PROMPT = 1.0  # seconds: generous for a behaviour test on a busy machine, not a benchmark


@pytest.fixture
def sqlite_url(database_maker: DatabaseMaker) -> Iterator[str]:
    """A fresh migrated SQLite file with the matrix world."""
    with database_maker.database("sqlite") as url:
        load_world(url, world("matrix"), key_secret=TEST_KEY_SECRET)
        yield url


@contextmanager
def write_lock_held(url: str) -> Iterator[sqlite3.Connection]:
    """Another connection holds the file's write lock (`BEGIN IMMEDIATE`) until the block
    ends, then rolls back: what it held changes nothing."""
    side = sqlite3.connect(sqlite_path(url), isolation_level=None, timeout=0)
    try:
        side.execute("BEGIN IMMEDIATE")
        yield side
        if side.in_transaction:
            side.execute("ROLLBACK")
    finally:
        side.close()


def _count(url: str) -> int:
    found: int = query(url, "SELECT count(*) FROM integrations")[0][0]
    return found


def _wait_until_a_unit_of_work_is_in_progress(client: httpx.Client) -> None:
    """Until the server's metrics show a database unit of work under way (the metrics answer
    without the database, so this works before the fix too)."""
    deadline = time.monotonic() + 5
    while "cbstop_db_pool_in_use 0" in client.get("/metrics").text:
        assert time.monotonic() < deadline, "the create never reached the database"
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.xdist_group("servers")
def test_a_write_waiting_for_the_lock_holds_up_no_read_and_completes_once_it_is_free(
    sqlite_url: str,
) -> None:
    headers = {"Authorization": f"Bearer {secret(world('matrix'), 'key_org_a1')}"}
    created: list[httpx.Response] = []
    with running(sqlite_url) as server, httpx.Client(base_url=server.url, timeout=20) as client:
        before = _count(sqlite_url)
        with write_lock_held(sqlite_url):
            writer = threading.Thread(
                target=lambda: created.append(
                    client.post("/v1/integrations", json=create_body(), headers=headers)
                )
            )
            writer.start()
            _wait_until_a_unit_of_work_is_in_progress(client)  # the create, waiting for the lock
            slowest = 0.0
            for path, auth in [
                ("/v1/integrations/int_a1_orders", headers),
                ("/v1/integrations", headers),
                ("/readyz", {}),
            ] * 3:
                started = time.monotonic()
                answer = client.get(path, headers=auth)
                took = time.monotonic() - started
                slowest = max(slowest, took)
                assert answer.status_code == 200, (path, answer.text)
                assert took < PROMPT, f"GET {path} took {took:.2f}s while a write waited"
            assert writer.is_alive(), "the create did not wait for the lock"
            assert not created
            assert _count(sqlite_url) == before
        writer.join(timeout=15)
        assert created, "the create never finished after the lock was released"
        answer = created[0]
        assert answer.status_code == 201, answer.text
        read = client.get(f"/v1/integrations/{answer.json()['id']}", headers=headers)
        assert read.status_code == 200
        assert _count(sqlite_url) == before + 1
        assert "Traceback" not in server.stderr
    print(f"\n[sqlite lock] slowest GET or /readyz while a write waited: {slowest * 1000:.0f} ms")


@pytest.mark.slow
@pytest.mark.xdist_group("servers")
def test_a_write_the_lock_outlasts_answers_503_after_its_wait_and_changes_nothing(
    sqlite_url: str,
) -> None:
    headers = {
        "Authorization": f"Bearer {secret(world('matrix'), 'key_org_a1')}",
        "X-Request-Id": "lock-outlasted-1",
    }
    before = snapshot(sqlite_url)
    with (
        running(sqlite_url) as server,
        httpx.Client(base_url=server.url, timeout=20) as client,
        write_lock_held(sqlite_url),
    ):
        started = time.monotonic()
        answer = client.patch(
            "/v1/integrations/int_a1_orders", json={"name": "Renamed"}, headers=headers
        )
        waited = time.monotonic() - started
        assert answer.status_code == 503, answer.text
        assert envelope_code(answer) == "SERVICE_UNAVAILABLE"
        assert answer.headers["retry-after"] == "1"
        assert answer.headers["x-request-id"] == "lock-outlasted-1"
        assert LOCK_WAIT <= waited < LOCK_WAIT + PROMPT
        assert client.get("/readyz").status_code == 200  # a held lock is not unreadiness
        time.sleep(0.2)
        stderr = server.stderr
    assert snapshot(sqlite_url) == before
    assert "Traceback" not in stderr
    assert stderr.count("database unavailable") == 1
    assert "write lock" in stderr


def test_a_write_that_outwaits_the_lock_is_unavailable_and_changes_nothing(
    sqlite_url: str,
) -> None:
    async def scenario(side: sqlite3.Connection) -> None:
        db = SqliteDatabase.open(sqlite_path(sqlite_url), lock_wait=0.5)
        try:
            started = time.monotonic()
            with pytest.raises(ServiceUnavailable) as raised:
                async with db.single_statement_write() as conn:
                    await conn.execute("DELETE FROM integration_merchants")
            waited = time.monotonic() - started
            assert 0.5 <= waited < 0.5 + PROMPT
            assert "deadline" in str(raised.value.__cause__)
            # The writer is not left inside a transaction: the next write goes through.
            side.execute("ROLLBACK")
            async with db.single_statement_write() as conn:
                await conn.execute("UPDATE integrations SET name = 'x' WHERE id = 'nope'")
        finally:
            await db.close()

    before = snapshot(sqlite_url)
    with write_lock_held(sqlite_url) as side:
        asyncio.run(scenario(side))
    assert snapshot(sqlite_url) == before


def test_a_write_cancelled_while_it_waits_for_the_lock_leaves_no_transaction_behind(
    sqlite_url: str,
) -> None:
    async def scenario(side: sqlite3.Connection) -> None:
        db = SqliteDatabase.open(sqlite_path(sqlite_url))
        try:

            async def delete() -> None:
                async with db.single_statement_write() as conn:
                    await conn.execute("DELETE FROM integration_merchants")

            waiting = asyncio.create_task(delete())
            await asyncio.sleep(0.2)
            started = time.monotonic()
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert time.monotonic() - started < 0.2  # not the rest of the 10 s busy wait
            side.execute("ROLLBACK")
            # Neither the file's lock nor the writer's connection is left held.
            other = sqlite3.connect(sqlite_path(sqlite_url), isolation_level=None, timeout=1)
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            other.close()
            async with db.single_statement_write() as conn:
                await conn.execute("UPDATE integrations SET name = 'x' WHERE id = 'nope'")
            assert await _read(db) > 0
        finally:
            await db.close()

    before = snapshot(sqlite_url)
    with write_lock_held(sqlite_url) as side:
        asyncio.run(scenario(side))
    assert snapshot(sqlite_url) == before


async def _read(db: SqliteDatabase) -> int:
    async with db.connection() as conn:
        found: int = await conn.fetchval("SELECT count(*) FROM integration_merchants")
    return found


def test_a_defect_in_a_statement_is_not_unavailability(sqlite_url: str) -> None:
    async def scenario() -> None:
        db = SqliteDatabase.open(sqlite_path(sqlite_url))
        try:
            with pytest.raises(sqlite3.OperationalError, match="syntax error"):
                async with db.connection() as conn:
                    await conn.fetchval("SELEC 1")
            with pytest.raises(sqlite3.OperationalError, match="no such table"):
                async with db.single_statement_write() as conn:
                    await conn.execute("DELETE FROM no_such_table")
            # Neither left a transaction open.
            async with db.single_statement_write() as conn:
                await conn.execute("UPDATE integrations SET name = 'x' WHERE id = 'nope'")
        finally:
            await db.close()

    before = snapshot(sqlite_url)
    asyncio.run(scenario())
    assert snapshot(sqlite_url) == before


def test_an_unreadable_file_is_unavailability_not_a_defect(tmp_path: Path) -> None:
    async def scenario() -> None:
        db = SqliteDatabase.open(str(tmp_path / "missing" / "cbstop.db"))
        try:
            with pytest.raises(ServiceUnavailable):
                await db.ping()
        finally:
            await db.close()

    asyncio.run(scenario())
