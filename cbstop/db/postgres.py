"""PostgreSQL through an asyncpg pool.

Every failure to reach the database (refused, reset, timed out waiting for a connection or
for a statement) becomes `ServiceUnavailable`, so a client sees 503 with `Retry-After`,
never a hang or a 500.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Any

import asyncpg

from cbstop.db.database import Dialect, Row
from cbstop.errors import ServiceUnavailable
from cbstop.settings import Settings

# What "the database is not answering" looks like through asyncpg.
UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # A connection that got the server's FATAL while idle (pg_ctl stop -m fast) is left in a
    # state where its next query fails with this; it is dead, like a reset one.
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,
    asyncpg.QueryCanceledError,  # statement_timeout
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,  # another backend crashed: the server is restarting
    asyncpg.TooManyConnectionsError,
    asyncpg.InsufficientResourcesError,
)


def _discard(conn: asyncpg.pool.PoolConnectionProxy[asyncpg.Record]) -> None:
    """Close a connection that failed in use, so the pool never hands it out again.

    When the server went away asyncpg may already have closed it and detached it from its
    proxy, and `terminate()` on a detached proxy raises `InterfaceError`: nothing is left
    to do then.
    """
    with suppress(asyncpg.InterfaceError):
        conn.terminate()


class PostgresConnection:
    """A pooled connection, with the repositories' small interface."""

    dialect: Dialect = "postgresql"

    def __init__(
        self,
        conn: asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record],
    ) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        return await self._conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await self._conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._conn.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> None:
        await self._conn.execute(sql, *args)

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        await self._conn.executemany(sql, args)

    async def copy_records(
        self, table: str, columns: list[str], records: list[tuple[Any, ...]]
    ) -> None:
        """Bulk insert with COPY (used by the world loader)."""
        await self._conn.copy_records_to_table(table, records=records, columns=columns)


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Connections are used only in whole transactions, so nothing needs resetting.

    asyncpg's default reset costs a round trip on every release.
    """


class PostgresDatabase:
    """An asyncpg pool."""

    dialect: Dialect = "postgresql"

    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._pool = pool
        self._timeout = settings.pool_timeout
        self._waiting = 0

    @classmethod
    async def open(cls, url: str, settings: Settings) -> PostgresDatabase:
        pool = asyncpg.create_pool(
            url,
            min_size=0,
            max_size=settings.pool_max_size,
            timeout=settings.pool_timeout,  # connect timeout
            command_timeout=settings.statement_timeout + 1.0,
            reset=_no_reset,
            server_settings={
                "statement_timeout": str(int(settings.statement_timeout * 1000)),
                "idle_in_transaction_session_timeout": "10000",
                "jit": "off",
                # Every statement is shaped to plan well without its parameters' values
                # (see integrations/repository.py); re-planning each execution cost more
                # than running the statement.
                "plan_cache_mode": "force_generic_plan",
                "application_name": "cbstop",
            },
        )
        await pool  # connects min_size (0) connections: never fails on a down database
        return cls(pool, settings)

    @asynccontextmanager
    async def transaction(self, *, write: bool = False) -> AsyncIterator[PostgresConnection]:
        conn = await self._acquire()
        try:
            try:
                tx = conn.transaction()
                await tx.start()
            except UNAVAILABLE as exc:
                raise ServiceUnavailable() from exc
            try:
                yield PostgresConnection(conn)
            except BaseException:
                try:
                    await tx.rollback()
                except UNAVAILABLE:
                    _discard(conn)
                raise
            try:
                await tx.commit()
            except UNAVAILABLE as exc:
                raise ServiceUnavailable() from exc
        except UNAVAILABLE as exc:
            _discard(conn)
            raise ServiceUnavailable() from exc
        finally:
            await self._pool.release(conn)

    async def _acquire(self) -> asyncpg.pool.PoolConnectionProxy[asyncpg.Record]:
        pool = self._pool
        self._waiting += 1
        try:
            if pool.get_idle_size():
                # A connection is free and is taken without waiting: skip the timeout's
                # timer (measurably costly on the hot path; connecting has its own timeout).
                return await pool.acquire()
            return await pool.acquire(timeout=self._timeout)
        except UNAVAILABLE as exc:
            raise ServiceUnavailable() from exc
        finally:
            self._waiting -= 1

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[PostgresConnection]:
        conn = await self._acquire()
        try:
            yield PostgresConnection(conn)
        except UNAVAILABLE as exc:
            _discard(conn)
            raise ServiceUnavailable() from exc
        finally:
            await self._pool.release(conn)

    def atomic_write(self) -> AbstractAsyncContextManager[PostgresConnection]:
        return self.connection()

    async def ping(self) -> None:
        async with self.connection() as conn:
            await conn.fetchval("SELECT 1")

    def pool_stats(self) -> tuple[int, int]:
        size = self._pool.get_size()
        return size - self._pool.get_idle_size(), self._waiting

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._pool.close(), timeout=5)
        except (TimeoutError, *UNAVAILABLE):
            self._pool.terminate()
