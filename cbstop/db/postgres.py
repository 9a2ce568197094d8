"""PostgreSQL through asyncpg, on the pool of `cbstop.db.pool`.

Every failure of the database rather than of our code becomes `ServiceUnavailable`, so a
client sees 503 with `Retry-After`, never a hang or a 500. `unavailable` decides which those
are, by what the failure is, not by a list of exception classes:

- anything raised while opening a connection: the server refused us (no such database,
  authentication, too many connections, not accepting connections — SQLSTATE 55000 after
  `ALLOW_CONNECTIONS false`, a class that is a defect at any other time) or never answered;
- a server error whose SQLSTATE class says the database, not the statement, is at fault
  (`UNAVAILABLE_CLASSES`), or one of the few transient states of other classes
  (`UNAVAILABLE_STATES`: read-only, deadlock, serialization failure, lock not available);
- a connection-level failure on the client's side (`CONNECTION_LEVEL`).

A lock wait that ran out (`lock_timeout`, 55P03) is `LockWaitExpired`, the same 503, which a
request with an Idempotency-Key tells apart (its first request may still hold the key). A
unique key taken by a concurrent writer (23505) is `UniqueViolation`, for the repository to
handle. Everything else — a syntax error (42601), a missing table (42P01), a constraint the
repository did not expect — is a defect and stays a 500 with its traceback in the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg

from cbstop.db.database import DatabaseReadOnly, Dialect, Row, UniqueViolation
from cbstop.db.pool import Connection, Pool
from cbstop.errors import LockWaitExpired, ServiceUnavailable
from cbstop.settings import Settings

# SQLSTATE classes (the first two characters) that mean the database cannot serve now.
UNAVAILABLE_CLASSES = frozenset(
    {
        "08",  # connection exception
        "28",  # invalid authorization specification: authentication failed, role cannot log in
        "3D",  # invalid catalog name: the database was dropped or renamed
        "53",  # insufficient resources: too many connections, disk full, out of memory
        "57",  # operator intervention: statement_timeout, shutdown, cannot connect now
        "58",  # system error: I/O error
        "XX",  # internal error, data or index corrupted: the server's fault, not the request's
    }
)
# Single states of other classes that are the database's condition, not the statement's.
UNAVAILABLE_STATES = frozenset(
    {
        "25006",  # read_only_sql_transaction: a standby, a demoted primary, default read-only
        "25P03",  # idle_in_transaction_session_timeout: the server ended the session
        "25P04",  # transaction_timeout (PostgreSQL 17)
        "40001",  # serialization_failure: retrying is the documented answer
        "40P01",  # deadlock_detected: likewise
        "55P03",  # lock_not_available
    }
)
# What "the database is not answering" looks like on the client's side of the socket.
CONNECTION_LEVEL = (
    OSError,  # refused, reset, unreachable
    TimeoutError,  # connect timeout, command_timeout, the pool's wait (PoolTimeout)
    asyncpg.InterfaceError,  # the connection is closed (ConnectionDoesNotExistError), PoolClosed
    # A connection that got the server's FATAL while idle (pg_ctl stop -m fast) is left in a
    # state where its next query fails with this; it is dead, like a reset one.
    asyncpg.InternalClientError,
    DatabaseReadOnly,  # the readiness check found the database read-only
)


def unavailable(exc: BaseException) -> bool:
    """Whether `exc` is the database failing (503), not a defect of ours (500)."""
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        return state[:2] in UNAVAILABLE_CLASSES or state in UNAVAILABLE_STATES
    return isinstance(exc, CONNECTION_LEVEL)


def as_unavailable(exc: BaseException) -> ServiceUnavailable:
    """The 503 an unavailability stands for: `LockWaitExpired` for a lock wait that ran out."""
    if getattr(exc, "sqlstate", None) == "55P03":
        return LockWaitExpired()
    return ServiceUnavailable()


def unavailable_on_connect(exc: BaseException) -> bool:
    """Whether a failure to open a connection is unavailability: any refusal by the server,
    whatever its SQLSTATE (no request's input reached it), or a connection-level failure."""
    return isinstance(exc, asyncpg.PostgresError) or unavailable(exc)


# The readiness check, one round trip: does a statement run, and may it write?
PING = "SELECT pg_is_in_recovery(), current_setting('transaction_read_only') = 'on'"


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
                # A lock wait ends just before the statement's time would, as 55P03, so it
                # can be told apart from a slow statement: an Idempotency-Key's duplicate
                # waits for its first request in slices of this, up to 5 s (CONTRACT 3.1).
                "lock_timeout": str(max(1, int(settings.statement_timeout * 900))),
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
    async def transaction(
        self, *, write: bool = False, lock_wait: float | None = None
    ) -> AsyncIterator[PostgresConnection]:
        conn = await self._acquire()
        try:
            tx = conn.transaction()
            await tx.start()
            try:
                yield PostgresConnection(conn)
            except BaseException:
                try:
                    await tx.rollback()
                except Exception:
                    # Not reusable; the block's own error is the one to report.
                    self._pool.discard(conn)
                raise
            await tx.commit()
        except Exception as exc:
            failure = self._failure(conn, exc)
            if failure is exc:
                raise
            raise failure from exc
        finally:
            self._pool.release(conn)

    def _failure(self, conn: Connection, exc: Exception) -> Exception:
        """What a unit of work that failed with `exc` raises: `UniqueViolation` for a key a
        concurrent writer took; for the database failing, its 503, the connection dropped
        unless only a lock wait ran out (dead, or on a server that cannot serve, such as a
        demoted primary: the next unit of work gets a new connection, which may reach the new
        primary); otherwise `exc` itself, a defect."""
        if isinstance(exc, asyncpg.UniqueViolationError):
            return UniqueViolation(str(exc))
        if not unavailable(exc):
            return exc
        failure = as_unavailable(exc)
        if not isinstance(failure, LockWaitExpired):
            self._pool.discard(conn)
        return failure

    async def _acquire(self) -> Connection:
        try:
            return await self._pool.acquire(self._timeout)
        except Exception as exc:
            if not unavailable_on_connect(exc):
                raise
            raise ServiceUnavailable() from exc

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[PostgresConnection]:
        conn = await self._acquire()
        try:
            yield PostgresConnection(conn)
        except Exception as exc:
            failure = self._failure(conn, exc)
            if failure is exc:
                raise
            raise failure from exc
        finally:
            self._pool.release(conn)

    def single_statement_write(
        self, *, lock_wait: float | None = None
    ) -> AbstractAsyncContextManager[PostgresConnection]:
        return self.connection()

    async def ping(self) -> None:
        """One round trip: a statement runs, on a server that accepts writes."""
        async with self.connection() as conn:
            row = await conn.fetchrow(PING)
            assert row is not None
            in_recovery, read_only = row[0], row[1]
            if in_recovery:
                raise DatabaseReadOnly("the server is a standby (pg_is_in_recovery)")
            if read_only:
                raise DatabaseReadOnly("transactions are read-only (transaction_read_only)")

    def pool_stats(self) -> tuple[int, int]:
        return self._pool.size - self._pool.idle, self._pool.waiting

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._pool.close(), timeout=5)
        except Exception as exc:
            self._pool.terminate()
            if not unavailable(exc):
                raise
