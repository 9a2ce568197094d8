"""One SQLite connection on its own thread (a `Lane`), and what every user of the file shares:
how a connection is opened, `$n` parameters in SQLite's spelling, and which of SQLite's errors
are the database failing rather than a defect.

A lane's asyncio lock gives the connection to one unit of work at a time, and every call runs
on the lane's one worker thread, so the event loop never blocks on the file.

Errors are classified by SQLite's result code (`unavailable`): busy, locked, I/O, full,
read-only file, corrupt are the database failing (503); a syntax error or a missing table
(SQLITE_ERROR) is a defect (500).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any, TypeVar

from cbstop.db.database import Dialect, Row
from cbstop.errors import LockWaitExpired, ServiceUnavailable

T = TypeVar("T")
_PARAM = re.compile(r"\$(\d+)")

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
    conn.execute("PRAGMA synchronous=FULL")  # a COMMIT is on disk when it returns
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

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue `fn` on this lane's thread; it runs even if its awaiter is cancelled."""
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._executor, lambda: fn(self._connection()))

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
                    raise LockWaitExpired() from lock_wait_expired(
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


def lock_wait_expired(exc: Exception, behind: str) -> TimeoutError:
    """The cause logged when a write gave up waiting for the lock."""
    expired = TimeoutError(f"a write stopped waiting for {behind} at its deadline")
    expired.__cause__ = exc
    return expired
