"""SQLite through the standard library, for the embedded default and the demo.

One connection per process, driven from one worker thread so the event loop never blocks on
the file; an asyncio lock makes each unit of work a whole transaction. WAL mode and a busy
timeout let several processes (`--workers N`) share the file.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import lru_cache
from typing import Any, TypeVar

from cbstop.db.database import Dialect, Row
from cbstop.errors import ServiceUnavailable

T = TypeVar("T")
_PARAM = re.compile(r"\$(\d+)")


@lru_cache(maxsize=512)
def to_sqlite(sql: str) -> str:
    """`$1` (PostgreSQL) to `?1` (SQLite's numbered parameter)."""
    return _PARAM.sub(r"?\1", sql)


def connect(path: str) -> sqlite3.Connection:
    """A connection with the settings every user of the file needs."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


class SqliteConnection:
    """The connection inside a transaction; every call runs on the database thread."""

    dialect: Dialect = "sqlite"

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        return await self._db.run(lambda c: c.execute(to_sqlite(sql), args).fetchall())

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        row: Row | None = await self._db.run(lambda c: c.execute(to_sqlite(sql), args).fetchone())
        return row

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]

    async def execute(self, sql: str, *args: Any) -> None:
        await self._db.run(lambda c: c.execute(to_sqlite(sql), args))

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        rows = list(args)
        await self._db.run(lambda c: c.executemany(to_sqlite(sql), rows))

    async def bulk_insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        marks = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
        await self.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)


class SqliteDatabase:
    """One SQLite file."""

    dialect: Dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cbstop-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._thread_lock = threading.Lock()
        self._waiting = 0
        self._busy = False

    @classmethod
    def open(cls, path: str) -> SqliteDatabase:
        return cls(path)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self.path)
        return self._conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` with the connection on the database thread."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, lambda: fn(self._connection()))
        except sqlite3.OperationalError as exc:
            # "database is locked" past the busy timeout, disk I/O errors: not the client's fault.
            raise ServiceUnavailable() from exc

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[SqliteConnection]:
        self._waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self._waiting -= 1
        self._busy = True
        try:
            yield SqliteConnection(self)
        finally:
            self._busy = False
            self._lock.release()

    @asynccontextmanager
    async def transaction(self, *, write: bool = False) -> AsyncIterator[SqliteConnection]:
        async with self.connection() as conn:
            await self.run(lambda c: c.execute("BEGIN IMMEDIATE" if write else "BEGIN"))
            try:
                yield conn
            except BaseException:
                await self.run(lambda c: c.execute("ROLLBACK"))
                raise
            try:
                await self.run(lambda c: c.execute("COMMIT"))
            except ServiceUnavailable:
                await self.run(lambda c: c.execute("ROLLBACK") if c.in_transaction else None)
                raise

    def single_statement_write(self) -> AbstractAsyncContextManager[SqliteConnection]:
        return self.transaction(write=True)

    async def ping(self) -> None:
        async with self.connection() as conn:
            await conn.fetchval("SELECT 1")

    def pool_stats(self) -> tuple[int, int]:
        return int(self._busy), self._waiting

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=False)
