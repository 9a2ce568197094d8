"""The small database interface the repositories are written against.

A `Database` hands out one `Connection` per unit of work, inside a transaction that commits
when the block ends and rolls back if it raises. Repositories write PostgreSQL-style `$1`
parameters; the SQLite implementation accepts them too. `Connection.dialect` lets a
repository choose between the few statements that differ.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, Protocol, TypeVar

T = TypeVar("T")

Dialect = Literal["postgresql", "sqlite"]


class DatabaseReadOnly(Exception):
    """The database answers but refuses writes (a standby, a demoted primary, read-only)."""


class UniqueViolation(Exception):
    """A unique key was taken by a concurrent writer (PostgreSQL 23505, SQLite's UNIQUE
    constraint): the unit of work rolled back, and may be run again."""


def rolled_back(exc: BaseException) -> bool:
    """Whether a unit of work failed with the database's own refusal, so that nothing of it
    was committed and it can run again: a unique key taken (`UniqueViolation`), or any error
    the server reported (a SQLSTATE on the exception or its cause: a deadlock, a lock wait or
    the statement's time run out, a constraint). Not a lost connection or a client-side
    timeout, after which a commit may or may not have happened."""
    if isinstance(exc, UniqueViolation):
        return True
    return any(getattr(e, "sqlstate", None) for e in (exc, exc.__cause__) if e is not None)


class Row(Protocol):
    """A result row, readable by position or by column name."""

    def __getitem__(self, key: int | str | slice, /) -> Any: ...


class Connection(Protocol):
    """One connection inside one transaction."""

    dialect: Dialect

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]: ...
    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...
    async def fetchval(self, sql: str, *args: Any) -> Any: ...
    async def execute(self, sql: str, *args: Any) -> None: ...
    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None: ...
    async def bulk_insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Insert many rows at once: COPY on PostgreSQL, one `executemany` on SQLite."""
        ...


class Database(Protocol):
    """A pool of connections to one database."""

    dialect: Dialect

    def transaction(
        self, *, write: bool = False, lock_wait: float | None = None
    ) -> AbstractAsyncContextManager[Connection]:
        """One unit of work; a unit that writes says `write=True`, which takes SQLite's
        write lock up front (waiting for it never holds up this process's reads). On SQLite
        a write waits at most `lock_wait` seconds for the lock (default: the database's own
        limit), then `LockWaitExpired`; PostgreSQL's lock waits end at `lock_timeout`."""
        ...

    def connection(self) -> AbstractAsyncContextManager[Connection]:
        """A connection without an explicit transaction, for a read that is one statement
        (a statement is atomic on its own): it saves the BEGIN and COMMIT round trips on the
        hot paths. Writes go through `single_statement_write` or `transaction(write=True)`."""
        ...

    def single_statement_write(
        self, *, lock_wait: float | None = None
    ) -> AbstractAsyncContextManager[Connection]:
        """A write that the repository makes one statement on PostgreSQL (data-modifying
        CTEs): atomic by itself, so no BEGIN/COMMIT round trips. SQLite has no
        data-modifying CTEs, so there it is a write transaction around several statements."""
        ...

    async def ping(self) -> None:
        """Raise `ServiceUnavailable` unless the database answers (on PostgreSQL: and
        accepts writes); docs/production.md says exactly what each checks."""
        ...

    def pool_stats(self) -> tuple[int, int]:
        """(connections in use, requests waiting for one)."""
        ...

    async def close(self) -> None: ...


async def open_database(url: str, settings: Any) -> Database:
    """Open the database the URL names (PostgreSQL or SQLite)."""
    if url.startswith(("postgresql://", "postgres://")):
        from cbstop.db.postgres import PostgresDatabase

        return await PostgresDatabase.open(url, settings)
    from cbstop.db.sqlite import SqliteDatabase

    return SqliteDatabase.open(sqlite_path(url))


def run_with_database(settings: Any, work: Callable[[Database], Awaitable[T]]) -> T:
    """Run `work(db)` to the end on the database `settings` names, opened for it and closed
    afterwards (for commands, outside any event loop)."""

    async def run() -> T:
        db = await open_database(settings.database_url, settings)
        try:
            return await work(db)
        finally:
            await db.close()

    return asyncio.run(run())


def sqlite_path(url: str) -> str:
    """The file path of a `sqlite:///path` URL (`sqlite:///:memory:` is refused)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == prefix:
        raise ValueError(
            f"unsupported database URL {url!r}: use postgresql://user@host:port/db "
            "or sqlite:///path/to/file.db"
        )
    path = url[len(prefix) :]
    if path == ":memory:":
        raise ValueError("an in-memory SQLite database cannot be shared; give a file path")
    return path
