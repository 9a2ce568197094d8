"""SQLite through the standard library, for the embedded default and the demo.

Two connections per process, each a `Lane` (`sqlite_lane.py`: its own worker thread, so the
event loop never blocks on the file, and one unit of work at a time): one for reads, one for
writes. WAL mode lets the reads go on while a write waits for the file's write lock, which
another process (`--workers N`, a `cbstop load`) may hold for seconds: with one connection
and one thread, a write waiting in SQLite's busy handler held up every request of its
process, `/readyz` included, for the 10 s of the busy timeout.

The writer waits for the lock without holding its thread either: `BEGIN IMMEDIATE` is tried
with a short busy timeout (`LOCK_SLICE_MS`), and between tries the unit of work is back on the
event loop, where it can be cancelled (the drain timeout), until `LOCK_WAIT`; then 503.

Writes are durable when answered: `synchronous=FULL`, so every COMMIT waits for the WAL's
fsync (NORMAL, in WAL mode, does not: a power cut could lose acknowledged writes). The writes
of a process share that fsync (group commit). They still run one after another on the writer,
but a unit that ends while others wait for the writer leaves its transaction open, gives the
writer to the next, and is answered when that `_Group`'s COMMIT has run; the last unit of a
group, or one that ends with nobody waiting (an idle process: no added latency), commits.
Each unit after a group's first runs inside its own SAVEPOINT, so one that fails (a unique
key taken, an exception, a cancellation) undoes only its own writes. A group takes at most
`GROUP_UNITS` units or `GROUP_AGE` seconds from its BEGIN, and a closer task per handed-over
group commits it if the unit expected to go on never comes (cancelled, out of time). If the
COMMIT fails, or a unit's error ends the whole transaction (I/O, disk full), every unit of
the group fails (503): none of their writes were kept.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Any

from cbstop.db.database import Dialect, UniqueViolation
from cbstop.db.sqlite_lane import (
    SQLITE_BUSY,
    Lane,
    SqliteConnection,
    lock_wait_expired,
    unavailable,
)
from cbstop.errors import LockWaitExpired, ServiceUnavailable

LOCK_WAIT = 10.0  # seconds a write waits for another process's write lock before 503
LOCK_SLICE_MS = 20  # each try's busy timeout: the writer thread is never held longer
READ_BUSY_MS = 1000  # a read waits only on a checkpoint or recovery, rare and short in WAL
# A group commit's bounds: its first unit's answer waits for at most these many units, or
# this long after its BEGIN (an fsync is ~1-10 ms: longer gathers gain little).
GROUP_UNITS = 64
GROUP_AGE = 0.010


@asynccontextmanager
async def _unit(
    lane: Lane, begin: Callable[[], Awaitable[None]]
) -> AsyncIterator[SqliteConnection]:
    """`begin()`, the block, COMMIT; ROLLBACK if any of it fails."""
    try:
        await begin()
        yield SqliteConnection(lane)
        await lane.run(_commit)
    except BaseException:
        # The block failed, or a BEGIN or COMMIT failed or was cancelled while its thread
        # went on: the lane's next unit of work must not start inside this one. The ROLLBACK
        # queues behind whatever still runs on the lane's thread.
        with suppress(sqlite3.Error):
            await lane.call(_rollback)
        raise


def _begin(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN")


def _begin_write(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        # Left by a failed COMMIT whose ROLLBACK failed too: its units were told, and no
        # group is open, so nobody owns it.
        conn.execute("ROLLBACK")
    conn.execute("BEGIN IMMEDIATE")


def _commit(conn: sqlite3.Connection) -> None:
    conn.execute("COMMIT")


def _commit_group(conn: sqlite3.Connection) -> None:
    """COMMIT; if it fails, ROLLBACK whatever SQLite has not rolled back already."""
    try:
        conn.execute("COMMIT")
    except sqlite3.Error:
        _quiet_rollback(conn)
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _quiet_rollback(conn: sqlite3.Connection) -> None:
    with suppress(sqlite3.Error):
        _rollback(conn)


def _savepoint(previous: int, name: int) -> Callable[[sqlite3.Connection], bool]:
    """Open unit `name`'s savepoint, releasing first the previous unit's (left open to save
    its thread round trip). Names differ so that if that RELEASE fails, undoing this unit
    cannot reach the previous unit's writes. False, and nothing done, if the group's
    transaction is gone (a unit went on after an error that ended it): a SAVEPOINT would
    begin a new one, and the group's units would be answered for writes that are not there."""

    def run(conn: sqlite3.Connection) -> bool:
        if not conn.in_transaction:
            return False
        if previous:
            conn.execute(f"RELEASE unit_{previous}")
        conn.execute(f"SAVEPOINT unit_{name}")
        return True

    return run


def _undo(name: int) -> Callable[[sqlite3.Connection], bool]:
    """Undo unit `name`'s writes; whether the group's transaction is still there (an I/O
    error or a full disk makes SQLite roll back all of it)."""

    def run(conn: sqlite3.Connection) -> bool:
        with suppress(sqlite3.Error):  # no such savepoint: its SAVEPOINT never ran
            conn.execute(f"ROLLBACK TO unit_{name}")
            conn.execute(f"RELEASE unit_{name}")
        return conn.in_transaction

    return run


def _failure(step: asyncio.Future[Any]) -> BaseException | None:
    """What a finished step on a lane's thread raised, or None."""
    return asyncio.CancelledError() if step.cancelled() else step.exception()


class _Group:
    """Write units sharing one transaction, answered together once its COMMIT has run."""

    __slots__ = ("closer", "ended", "error", "joined", "savepoint", "started", "units")

    def __init__(self, started: float) -> None:
        self.started = started
        self.units = 0  # units that ended well, waiting for the COMMIT
        self.joined = 0  # units after the first (they name their savepoints by it)
        self.savepoint = 0  # the last such unit's savepoint, left open (0: none)
        self.closer: asyncio.Task[None] | None = None
        self.ended = asyncio.Event()
        self.error: BaseException | None = None  # why its writes are gone

    def end(self, error: BaseException | None) -> None:
        self.error = error
        self.ended.set()

    async def committed(self) -> None:
        """Wait for the COMMIT; 503 if the group's writes are gone."""
        await self.ended.wait()
        if self.error is not None:
            raise ServiceUnavailable() from self.error


class SqliteDatabase:
    """One SQLite file: a read lane and a write lane."""

    dialect: Dialect = "sqlite"

    def __init__(self, path: str, *, lock_wait: float = LOCK_WAIT) -> None:
        self.path = path
        self.lock_wait = lock_wait
        self.commits = 0  # write groups committed (tests count how units share them)
        self._reader = Lane(path, "cbstop-sqlite-read", READ_BUSY_MS)
        self._writer = Lane(path, "cbstop-sqlite-write", LOCK_SLICE_MS)
        self._group: _Group | None = None  # handed over: open between two units
        self._closers: set[asyncio.Task[None]] = set()
        self._closers_waiting = 0

    @classmethod
    def open(cls, path: str, *, lock_wait: float = LOCK_WAIT) -> SqliteDatabase:
        return cls(path, lock_wait=lock_wait)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[SqliteConnection]:
        reader = self._reader
        await reader.acquire()  # not `held()`: one context manager less on every read
        try:
            yield SqliteConnection(reader)
        finally:
            reader.release()

    @asynccontextmanager
    async def transaction(
        self, *, write: bool = False, lock_wait: float | None = None
    ) -> AsyncIterator[SqliteConnection]:
        if not write:
            reader = self._reader
            async with reader.held(), _unit(reader, lambda: reader.run(_begin)) as conn:
                yield conn
            return
        # One deadline for the whole wait: behind this process's other writes, then for
        # the file's lock.
        wait = self.lock_wait if lock_wait is None else lock_wait
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        writer = self._writer
        await writer.acquire(deadline)
        group = self._group
        name = 0  # this unit's savepoint (0: it is its group's first unit, and has none)
        try:
            if group is None:
                await self._begin_immediate(deadline)
                group = _Group(loop.time())
            else:
                group.joined += 1
                name, previous, group.savepoint = group.joined, group.savepoint, 0
                if not await writer.run(_savepoint(previous, name)):
                    self._lose(group, sqlite3.OperationalError("the transaction had ended"))
                    name = 0
                    await self._begin_immediate(deadline)
                    group = _Group(loop.time())
            yield SqliteConnection(writer)
        except BaseException as exc:
            # The block failed, or a BEGIN or SAVEPOINT failed or was cancelled while its
            # thread went on: the undo queues behind whatever still runs on the thread.
            await self._undo(group, name, exc)
            if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc):
                raise UniqueViolation(str(exc)) from exc
            raise
        await self._end(group, name)

    async def _begin_immediate(self, deadline: float) -> None:
        """Take the file's write lock, waiting on the event loop, not in the thread."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._writer.call(_begin_write)
                return
            except sqlite3.Error as exc:
                busy = getattr(exc, "sqlite_errorcode", 0) & 0xFF == SQLITE_BUSY
                if busy and loop.time() < deadline:
                    # That try already waited LOCK_SLICE_MS in SQLite's busy handler; the
                    # pause lets a cancellation in.
                    await asyncio.sleep(0.001)
                    continue
                if busy:
                    raise LockWaitExpired() from lock_wait_expired(exc, "the file's write lock")
                if unavailable(exc):
                    raise ServiceUnavailable() from exc
                raise

    async def _end(self, group: _Group, name: int) -> None:
        """A unit's block ended well: leave its group open for the units waiting for the
        writer, and wait for its COMMIT; or commit it now."""
        writer = self._writer
        group.units += 1
        group.savepoint = name
        if (
            writer.waiting > self._closers_waiting
            and group.units < GROUP_UNITS
            and asyncio.get_running_loop().time() - group.started < GROUP_AGE
        ):
            self._group = group
            if group.closer is None:
                group.closer = closer = asyncio.create_task(self._close(group))
                self._closers.add(closer)
                closer.add_done_callback(self._closers.discard)
            writer.release()
            await group.committed()
            return
        try:
            await asyncio.shield(self._commit(group))
        except sqlite3.Error as exc:
            if not unavailable(exc):
                raise
            raise ServiceUnavailable() from exc

    def _commit(self, group: _Group) -> asyncio.Future[None]:
        """Queue the group's COMMIT; its units are answered, and the writer goes to the next
        unit, once it has run, whoever still waits for it."""
        writer = self._writer
        self._group = None  # nobody joins a group whose COMMIT is queued
        step = writer.submit(_commit_group)

        def settle(step: asyncio.Future[None]) -> None:
            error = _failure(step)
            if error is None:
                self.commits += 1
            group.end(error)
            writer.release()

        step.add_done_callback(settle)
        return step

    async def _undo(self, group: _Group | None, name: int, exc: BaseException) -> None:
        """Undo a unit that failed; the writer goes to the next unit once that has run."""
        writer = self._writer
        if not name:
            # Its group's first unit: nobody else's writes are in the transaction.
            rollback = writer.submit(_quiet_rollback)
            rollback.add_done_callback(lambda _: writer.release())
            await asyncio.shield(rollback)
            return
        assert group is not None

        def settle(step: asyncio.Future[bool]) -> None:
            if _failure(step) is not None or not step.result():
                # The unit's error ended the whole transaction (SQLITE_FULL does).
                lost = sqlite3.OperationalError("another unit's error ended the transaction")
                lost.__cause__ = exc
                self._lose(group, lost)
            writer.release()

        undo = writer.submit(_undo(name))
        undo.add_done_callback(settle)
        with suppress(Exception):  # the unit's own exception is the one to raise
            await asyncio.shield(undo)

    def _lose(self, group: _Group, error: BaseException) -> None:
        """The group's transaction is gone, and its units' writes with it: they fail."""
        if self._group is group:
            self._group = None
        group.end(error)

    async def _close(self, group: _Group) -> None:
        """Commit a handed-over group if no unit does: the unit expected to go on may have
        been cancelled, or run out of time, before it took the writer."""
        writer = self._writer
        self._closers_waiting += 1
        try:
            await writer.acquire()
        finally:
            self._closers_waiting -= 1
        if self._group is not group:  # committed by a unit, or lost
            writer.release()
            return
        with suppress(Exception):  # its units hear of a failure
            await asyncio.shield(self._commit(group))

    def single_statement_write(
        self, *, lock_wait: float | None = None
    ) -> AbstractAsyncContextManager[SqliteConnection]:
        return self.transaction(write=True, lock_wait=lock_wait)

    async def ping(self) -> None:
        """A read answers (a write lock held elsewhere is no reason to be unready)."""
        async with self.connection() as conn:
            await conn.fetchval("SELECT 1")

    def pool_stats(self) -> tuple[int, int]:
        reader, writer = self._reader, self._writer
        waiting = reader.waiting + writer.waiting - self._closers_waiting
        return int(reader.busy) + int(writer.busy), waiting

    async def close(self) -> None:
        while self._closers:  # an open group commits before its connection closes
            await asyncio.gather(*self._closers, return_exceptions=True)
        await self._reader.close()
        await self._writer.close()
