"""SQLite group commit: the writes of a process that wait for the writer share one COMMIT
(one fsync, `synchronous=FULL`), each answered only once that COMMIT has run; a unit that
fails, or is cancelled, undoes only its own writes; a write with nobody waiting commits at
once; reads never wait for a group."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from cbstop.db import sqlite as lite
from cbstop.db.database import UniqueViolation
from cbstop.db.sqlite import SqliteDatabase
from cbstop.db.sqlite_lane import SqliteConnection, connect
from cbstop.errors import ServiceUnavailable

SAFETY = 10.0  # seconds: only so that a hang fails the test instead of the run

Block = Callable[[SqliteConnection], Awaitable[None]]

SCHEMA = """
CREATE TABLE notes (body TEXT PRIMARY KEY);
CREATE TABLE parents (id INTEGER PRIMARY KEY);
CREATE TABLE children (
    id INTEGER PRIMARY KEY,
    parent INTEGER REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED
);
"""


@pytest.fixture
def path(tmp_path: Path) -> Iterator[str]:
    """A fresh SQLite file with a table of notes (and a deferred foreign key)."""
    file = str(tmp_path / "group.db")
    conn = connect(file)
    conn.executescript(SCHEMA)
    conn.close()
    yield file


@pytest.fixture(autouse=True)
def unbounded_age(monkeypatch: pytest.MonkeyPatch) -> None:
    """A group gathers every unit waiting, however slow the machine (its age bound is a
    latency bound, not what these tests are about)."""
    monkeypatch.setattr(lite, "GROUP_AGE", 3600.0)


def notes(path: str) -> list[str]:
    """The notes committed to the file, read through a connection of its own."""
    conn = sqlite3.connect(path)
    try:
        return sorted(row[0] for row in conn.execute("SELECT body FROM notes"))
    finally:
        conn.close()


def assert_writer_free(path: str) -> None:
    """No transaction is left open on the file: another connection takes the write lock at
    once."""
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()


async def add(conn: SqliteConnection, *bodies: str) -> None:
    for body in bodies:
        await conn.execute("INSERT INTO notes (body) VALUES ($1)", body)


async def write(db: SqliteDatabase, block: Block) -> None:
    async with db.transaction(write=True) as conn:
        await block(conn)


def adding(*bodies: str) -> Block:
    return lambda conn: add(conn, *bodies)


async def until_waiting(db: SqliteDatabase, count: int) -> None:
    """Until `count` units wait for the writer."""
    async with asyncio.timeout(SAFETY):
        while db.pool_stats()[1] < count:
            await asyncio.sleep(0)


async def group_of(db: SqliteDatabase, blocks: list[Block]) -> list[BaseException | None]:
    """Run `blocks` as write units that all wait for the writer while the first one runs,
    so that they can share its group; what each raised."""
    gate = asyncio.Event()

    async def first(conn: SqliteConnection) -> None:
        await gate.wait()
        await blocks[0](conn)

    tasks = [asyncio.create_task(write(db, first))]
    await asyncio.sleep(0)  # the first takes the writer
    tasks += [asyncio.create_task(write(db, block)) for block in blocks[1:]]
    await until_waiting(db, len(blocks) - 1)
    gate.set()
    async with asyncio.timeout(SAFETY):
        results = await asyncio.gather(*tasks, return_exceptions=True)
    return [result if isinstance(result, BaseException) else None for result in results]


def scenario(path: str, body: Callable[[SqliteDatabase], Awaitable[None]]) -> None:
    async def run() -> None:
        db = SqliteDatabase.open(path)
        try:
            await body(db)
        finally:
            await db.close()

    asyncio.run(run())


def test_units_waiting_for_the_writer_share_one_commit(path: str) -> None:
    async def body(db: SqliteDatabase) -> None:
        failures = await group_of(db, [adding(f"n{n}") for n in range(10)])
        assert failures == [None] * 10
        assert db.commits == 1
        assert notes(path) == sorted(f"n{n}" for n in range(10))
        assert_writer_free(path)

    scenario(path, body)


def test_a_group_takes_at_most_group_units(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lite, "GROUP_UNITS", 3)

    async def body(db: SqliteDatabase) -> None:
        failures = await group_of(db, [adding(f"n{n}") for n in range(7)])
        assert failures == [None] * 7
        assert db.commits == 3  # 3 + 3 + 1
        assert len(notes(path)) == 7

    scenario(path, body)


def test_a_write_with_nobody_waiting_is_committed_before_it_is_answered(path: str) -> None:
    async def body(db: SqliteDatabase) -> None:
        for n in range(3):
            async with db.transaction(write=True) as conn:
                await add(conn, f"n{n}")
            assert db.commits == n + 1
            assert notes(path) == [f"n{m}" for m in range(n + 1)]
            assert_writer_free(path)

    scenario(path, body)


def test_a_failing_unit_in_a_group_undoes_only_its_own_writes(path: str) -> None:
    async def taken(conn: SqliteConnection) -> None:
        await add(conn, "b1", "a")  # "a" is the first unit's, not yet committed

    async def refused(conn: SqliteConnection) -> None:
        await add(conn, "c1")
        raise ValueError("refused")

    async def body(db: SqliteDatabase) -> None:
        failures = await group_of(db, [adding("a"), taken, refused, adding("d")])
        assert failures[0] is None and failures[3] is None
        assert isinstance(failures[1], UniqueViolation)
        assert isinstance(failures[2], ValueError)
        assert db.commits == 1
        assert notes(path) == ["a", "d"]
        assert_writer_free(path)

    scenario(path, body)


def test_a_failing_first_unit_leaves_the_units_behind_it_to_commit(path: str) -> None:
    async def refused(conn: SqliteConnection) -> None:
        await add(conn, "a")
        raise ValueError("refused")

    async def body(db: SqliteDatabase) -> None:
        failures = await group_of(db, [refused, adding("b"), adding("c")])
        assert isinstance(failures[0], ValueError)
        assert failures[1:] == [None, None]
        assert db.commits == 1
        assert notes(path) == ["b", "c"]

    scenario(path, body)


def test_a_unit_cancelled_while_it_waits_for_the_writer_does_not_hold_up_its_group(
    path: str,
) -> None:
    """The unit the group was handed to never takes the writer: its closer commits it."""

    async def body(db: SqliteDatabase) -> None:
        gate = asyncio.Event()
        follower: list[asyncio.Task[None]] = []

        async def first(conn: SqliteConnection) -> None:
            await gate.wait()
            await add(conn, "a")
            follower[0].cancel()  # still counted as waiting: the group is handed to it

        leader = asyncio.create_task(write(db, first))
        await asyncio.sleep(0)
        follower.append(asyncio.create_task(write(db, adding("b"))))
        await until_waiting(db, 1)
        gate.set()
        async with asyncio.timeout(SAFETY):
            await leader
            with pytest.raises(asyncio.CancelledError):
                await follower[0]
        assert db.commits == 1
        assert notes(path) == ["a"]
        assert_writer_free(path)
        await write(db, adding("c"))  # the writer goes on
        assert notes(path) == ["a", "c"]

    scenario(path, body)


def test_a_unit_cancelled_while_it_waits_for_its_groups_commit_leaves_it_to_commit(
    path: str,
) -> None:
    """Its write is in the group and commits with it (as a unit cancelled during its
    COMMIT always could); the unit that commits does not wait for it."""

    async def body(db: SqliteDatabase) -> None:
        gate = asyncio.Event()

        async def first(conn: SqliteConnection) -> None:
            await gate.wait()
            await add(conn, "a")

        async def second(conn: SqliteConnection) -> None:
            leader.cancel()  # it handed the group over: it awaits the group's COMMIT
            await add(conn, "b")

        leader = asyncio.create_task(write(db, first))
        await asyncio.sleep(0)
        follower = asyncio.create_task(write(db, second))
        await until_waiting(db, 1)
        gate.set()
        async with asyncio.timeout(SAFETY):
            await follower
            with pytest.raises(asyncio.CancelledError):
                await leader
        assert db.commits == 1
        assert notes(path) == ["a", "b"]
        assert_writer_free(path)

    scenario(path, body)


def test_a_unit_cancelled_in_its_block_undoes_only_its_own_writes(path: str) -> None:
    async def body(db: SqliteDatabase) -> None:
        inside = asyncio.Event()

        async def stalled(conn: SqliteConnection) -> None:
            await add(conn, "b")
            inside.set()
            await asyncio.sleep(3600)

        async def cancel_when_inside(task: asyncio.Task[None]) -> None:
            await inside.wait()
            task.cancel()

        gate = asyncio.Event()

        async def first(conn: SqliteConnection) -> None:
            await gate.wait()
            await add(conn, "a")

        tasks = [asyncio.create_task(write(db, first))]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(write(db, stalled)))
        tasks.append(asyncio.create_task(write(db, adding("c"))))
        await until_waiting(db, 2)
        canceller = asyncio.create_task(cancel_when_inside(tasks[1]))
        gate.set()
        async with asyncio.timeout(SAFETY):
            results = await asyncio.gather(*tasks, return_exceptions=True)
            await canceller
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], asyncio.CancelledError)
        assert db.commits == 1
        assert notes(path) == ["a", "c"]
        assert_writer_free(path)

    scenario(path, body)


def test_a_failed_commit_fails_every_unit_of_the_group(path: str) -> None:
    """A deferred foreign key is checked at COMMIT (the service's schema has none: this is
    the one failure of a COMMIT a test can provoke honestly)."""

    async def orphan(conn: SqliteConnection) -> None:
        await conn.execute("INSERT INTO children (id, parent) VALUES (1, 99)")

    async def body(db: SqliteDatabase) -> None:
        failures = await group_of(db, [adding("a"), orphan, adding("c")])
        assert isinstance(failures[0], ServiceUnavailable)
        assert isinstance(failures[1], ServiceUnavailable)
        # The unit that ran the COMMIT hears SQLite's own error, as any write did before.
        assert isinstance(failures[2], sqlite3.IntegrityError)
        assert "FOREIGN KEY" in str(failures[2])
        assert db.commits == 0
        assert notes(path) == []
        assert_writer_free(path)
        await write(db, adding("d"))
        assert notes(path) == ["d"]

    scenario(path, body)


UNLIMITED = "PRAGMA max_page_count = 1073741823"


def unlimited(body: str) -> Block:
    """Lift the writer's page limit, then add a note."""

    async def block(conn: SqliteConnection) -> None:
        await conn.execute(UNLIMITED)
        await add(conn, body)

    return block


def test_a_unit_whose_error_ends_the_transaction_fails_its_whole_group(path: str) -> None:
    """SQLITE_FULL rolls back the whole transaction, not only the statement: the units
    before it in the group lost their writes, and are told."""

    async def overflow(conn: SqliteConnection) -> None:
        pages = await conn.fetchval("PRAGMA page_count")
        await conn.execute(f"PRAGMA max_page_count = {pages + 1}")
        await conn.execute("INSERT INTO notes (body) VALUES (hex(zeroblob(100000)))")

    async def body(db: SqliteDatabase) -> None:
        failures = await group_of(db, [adding("a"), overflow, unlimited("c")])
        assert isinstance(failures[0], ServiceUnavailable)
        assert isinstance(failures[1], ServiceUnavailable)  # database or disk is full
        assert failures[2] is None  # it began a group of its own
        assert notes(path) == ["c"]
        assert_writer_free(path)

    scenario(path, body)


def test_a_unit_that_goes_on_after_its_transaction_ended_cannot_hide_it(path: str) -> None:
    """A block that swallows the error that ended the transaction does not make the next
    unit's SAVEPOINT begin a new transaction under the group's name."""

    async def swallowed(conn: SqliteConnection) -> None:
        pages = await conn.fetchval("PRAGMA page_count")
        await conn.execute(f"PRAGMA max_page_count = {pages + 1}")
        with pytest.raises(ServiceUnavailable):
            await conn.execute("INSERT INTO notes (body) VALUES (hex(zeroblob(100000)))")
        await conn.execute(UNLIMITED)

    async def body(db: SqliteDatabase) -> None:
        failures = await group_of(db, [adding("a"), swallowed, unlimited("c")])
        assert isinstance(failures[0], ServiceUnavailable)
        assert isinstance(failures[1], ServiceUnavailable)
        assert failures[2] is None
        assert notes(path) == ["c"]
        assert_writer_free(path)

    scenario(path, body)


def test_reads_go_on_while_a_group_is_open(path: str) -> None:
    seen: list[list[str]] = []

    async def body(db: SqliteDatabase) -> None:
        async def read() -> list[str]:
            async with db.connection() as conn:
                rows = await conn.fetch("SELECT body FROM notes ORDER BY body")
            return [row[0] for row in rows]

        async def second(conn: SqliteConnection) -> None:
            await add(conn, "b")
            seen.append(await read())  # "a" is written, in the open group
            async with db.transaction() as reading:
                seen.append([row[0] for row in await reading.fetch("SELECT body FROM notes")])

        failures = await group_of(db, [adding("a"), second])
        assert failures == [None, None]
        assert seen == [[], []]
        assert await read() == ["a", "b"]
        assert db.commits == 1

    scenario(path, body)


def test_every_connection_commits_with_synchronous_full(path: str) -> None:
    async def body(db: SqliteDatabase) -> None:
        async with db.transaction(write=True) as conn:
            assert await conn.fetchval("PRAGMA synchronous") == 2  # FULL
        async with db.connection() as conn:
            assert await conn.fetchval("PRAGMA synchronous") == 2

    scenario(path, body)
