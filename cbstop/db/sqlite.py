"""SQLite through the standard library, for the embedded default and the demo.

Two connections per process, each driven from its own worker thread so the event loop never
blocks on the file: one for reads, one for writes. An asyncio lock per connection makes each
unit of work a whole transaction. WAL mode lets the reads go on while a write waits for the
file's write lock, which another process (`--workers N`, a `cbstop load`) may hold for
seconds: with one connection and one thread, a write waiting in SQLite's busy handler held
up every request of its process, `/readyz` included, for the 10 s of the busy timeout.

The writer waits for the lock without holding its thread either: `BEGIN IMMEDIATE` is tried
with a short busy timeout (`LOCK_SLICE_MS`), and between tries the unit of work is back on the
event loop, where it can be cancelled (the drain timeout), until `LOCK_WAIT`; then 503.

Errors are classified by SQLite's result code (`unavailable`): busy, locked, I/O, full,
read-only file, corrupt are the database failing (503); a syntax error or a missing table
(SQLITE_ERROR) is a defect (500).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from functools import lru_cache
from typing import Any, TypeVar

from cbstop.db.database import Dialect, Row, UniqueViolation
from cbstop.errors import LockWaitExpired, ServiceUnavailable

T = TypeVar("T")
_PARAM = re.compile(r"\$(\d+)")

LOCK_WAIT = 10.0  # seconds a write waits for another process's write lock before 503
LOCK_SLICE_MS = 20  # each try's busy timeout: the writer thread is never held longer
READ_BUSY_MS = 1000  # a read waits only on a checkpoint or recovery, rare and short in WAL

SQLITE_BUSY = 5
# Primary result codes that are the database failing, not the statement: busy, locked,
# out of memory, read-only file, interrupted, I/O error, corrupt, full, cannot open,
# lock protocol, not a database.
UNAVAILABLE_CODES = frozenset({5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 26})


def unavailable(exc: sqlite3.Error) -> bool:
    """Whether a SQLite error is the database failing (503), not a defect of ours (500)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in UNAVAILABLE_CODES


@lru_cache(maxsize=512)
def to_sqlite(sql: str) -> str:
    """`$1` (PostgreSQL) to `?1` (SQLite's numbered parameter)."""
    return _PARAM.sub(r"?\1", sql)


def connect(path: str, *, busy_timeout_ms: int = 10000) -> sqlite3.Connection:
    """A connection with the settings every user of the file needs."""
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
    )
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class Lane:
    """One connection on its own thread, used by one unit of work at a time."""

    def __init__(self, path: str, name: str, busy_timeout_ms: int) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: sqlite3.Connection | None = None
        self.lock = asyncio.Lock()
        self.waiting = 0
        self.busy = False

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self._path, busy_timeout_ms=self._busy_timeout_ms)
        return self._conn

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` with the connection on this lane's thread; SQLite's errors as they are."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self._connection()))

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`call`, with the database's failures as `ServiceUnavailable`."""
        loop = asyncio.get_running_loop()
        try:
            # `call` written out: this is every read's path.
            return await loop.run_in_executor(self._executor, lambda: fn(self._connection()))
        except sqlite3.Error as exc:
            if not unavailable(exc):
                raise
            raise ServiceUnavailable() from exc

    async def acquire(self, deadline: float | None = None) -> None:
        """Take this lane for one unit of work; 503 if it is not free by `deadline`."""
        self.waiting += 1
        try:
            if deadline is None:
                await self.lock.acquire()
            else:
                try:
                    async with asyncio.timeout_at(deadline):
                        await self.lock.acquire()
                except TimeoutError as exc:
                    raise LockWaitExpired() from _lock_wait_expired(
                        exc, "the process's other writes"
                    )
        finally:
            self.waiting -= 1
        self.busy = True

    def release(self) -> None:
        self.busy = False
        self.lock.release()

    @asynccontextmanager
    async def held(self, deadline: float | None = None) -> AsyncIterator[None]:
        """This lane for one unit of work (`acquire`, then `release`)."""
        await self.acquire(deadline)
        try:
            yield
        finally:
            self.release()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=False)


class SqliteConnection:
    """The connection inside a unit of work; every call runs on its lane's thread."""

    dialect: Dialect = "sqlite"

    def __init__(self, lane: Lane) -> None:
        self._lane = lane

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        return await self._lane.run(lambda c: c.execute(to_sqlite(sql), args).fetchall())

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        row: Row | None = await self._lane.run(lambda c: c.execute(to_sqlite(sql), args).fetchone())
        return row

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]

    async def execute(self, sql: str, *args: Any) -> None:
        await self._lane.run(lambda c: c.execute(to_sqlite(sql), args))

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        rows = list(args)
        await self._lane.run(lambda c: c.executemany(to_sqlite(sql), rows))

    async def bulk_insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        marks = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
        await self.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)


def _lock_wait_expired(exc: Exception, behind: str) -> TimeoutError:
    """The cause logged when a write gave up waiting for the lock."""
    expired = TimeoutError(f"a write stopped waiting for {behind} at its deadline")
    expired.__cause__ = exc
    return expired


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


def _commit(conn: sqlite3.Connection) -> None:
    conn.execute("COMMIT")


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


class SqliteDatabase:
    """One SQLite file: a read lane and a write lane."""

    dialect: Dialect = "sqlite"

    def __init__(self, path: str, *, lock_wait: float = LOCK_WAIT) -> None:
        self.path = path
        self.lock_wait = lock_wait
        self._reader = Lane(path, "cbstop-sqlite-read", READ_BUSY_MS)
        self._writer = Lane(path, "cbstop-sqlite-write", LOCK_SLICE_MS)

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
        deadline = asyncio.get_running_loop().time() + wait
        writer = self._writer
        try:
            async with (
                writer.held(deadline),
                _unit(writer, lambda: self._begin_immediate(deadline)) as conn,
            ):
                yield conn
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" not in str(exc):
                raise
            raise UniqueViolation(str(exc)) from exc

    async def _begin_immediate(self, deadline: float) -> None:
        """Take the file's write lock, waiting on the event loop, not in the thread."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._writer.call(lambda c: c.execute("BEGIN IMMEDIATE"))
                return
            except sqlite3.Error as exc:
                busy = getattr(exc, "sqlite_errorcode", 0) & 0xFF == SQLITE_BUSY
                if busy and loop.time() < deadline:
                    # That try already waited LOCK_SLICE_MS in SQLite's busy handler; the
                    # pause lets a cancellation in.
                    await asyncio.sleep(0.001)
                    continue
                if busy:
                    raise LockWaitExpired() from _lock_wait_expired(exc, "the file's write lock")
                if unavailable(exc):
                    raise ServiceUnavailable() from exc
                raise

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
        return int(reader.busy) + int(writer.busy), reader.waiting + writer.waiting

    async def close(self) -> None:
        await self._reader.close()
        await self._writer.close()
