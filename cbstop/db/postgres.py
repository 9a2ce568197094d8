"""PostgreSQL through asyncpg, on the pool of `cbstop.db.pool`.

Every failure to reach the database (refused, reset, timed out waiting for a connection or
for a statement) becomes `ServiceUnavailable`, so a client sees 503 with `Retry-After`,
never a hang or a 500.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg

from cbstop.db.database import Dialect, Row
from cbstop.db.pool import Connection, Pool
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

    async def bulk_insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        await self._conn.copy_records_to_table(table, records=rows, columns=columns)


class PostgresDatabase:
    """A pool of connections to one PostgreSQL database."""

    dialect: Dialect = "postgresql"

    def __init__(self, pool: Pool, settings: Settings) -> None:
        self._pool = pool
        self._timeout = settings.pool_timeout

    @classmethod
    async def open(cls, url: str, settings: Settings) -> PostgresDatabase:
        pool = Pool(
            url,
            max_size=settings.pool_max_size,
            connect_timeout=settings.pool_timeout,
            command_timeout=settings.statement_timeout + 1.0,
            max_lifetime=settings.pool_max_lifetime,
            server_settings={
                "statement_timeout": str(int(settings.statement_timeout * 1000)),
                "idle_in_transaction_session_timeout": "10000",
                "jit": "off",
                # Every statement is shaped to plan well without its parameters' values
                # (see integrations/repository.py); re-planning each execution cost more
                # than running the statement.
                "plan_cache_mode": "force_generic_plan",
                # Short statements, many at once: a parallel plan only adds start-up cost,
                # and with generic plans it turned a group's page (1.5 ms) into a 155 ms
                # parallel merge join on a 1M world.
                "max_parallel_workers_per_gather": "0",
                "application_name": "cbstop",
            },
        )
        # Connections open on demand: starting never fails on a database that is down.
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
                    self._pool.discard(conn)
                raise
            try:
                await tx.commit()
            except UNAVAILABLE as exc:
                raise ServiceUnavailable() from exc
        except UNAVAILABLE as exc:
            self._pool.discard(conn)
            raise ServiceUnavailable() from exc
        finally:
            self._pool.release(conn)

    async def _acquire(self) -> Connection:
        try:
            return await self._pool.acquire(self._timeout)
        except UNAVAILABLE as exc:
            raise ServiceUnavailable() from exc

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[PostgresConnection]:
        conn = await self._acquire()
        try:
            yield PostgresConnection(conn)
        except UNAVAILABLE as exc:
            self._pool.discard(conn)
            raise ServiceUnavailable() from exc
        finally:
            self._pool.release(conn)

    def single_statement_write(self) -> AbstractAsyncContextManager[PostgresConnection]:
        return self.connection()

    async def ping(self) -> None:
        async with self.connection() as conn:
            await conn.fetchval("SELECT 1")

    def pool_stats(self) -> tuple[int, int]:
        return self._pool.size - self._pool.idle, self._pool.waiting

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._pool.close(), timeout=5)
        except (TimeoutError, *UNAVAILABLE):
            self._pool.terminate()
