"""A small pool of asyncpg connections, made for the hot path.

asyncpg's own pool spends a task (`asyncio.shield`) and a timer (`timeout`) on every
release, and a timer on every acquire: py-spy put those at about a fifth of a worker's time
on GET one. Here a release is a list append (or a hand-over to a waiter), and a timer is
armed only when a request must wait for a connection. Connections are used only in whole
units of work, so nothing needs resetting; one that is closed or left inside a transaction
is thrown away instead of being reused.

A connection also retires after `max_lifetime` seconds. Sessions keep generic plans for the
life of a connection, and a plan made when a table was small (a new deployment, a fresh
world) reads it with sequential scans: the benchmark's 1k world, grown to 80k rows by its own
creates, served GET one at 594 req/s on such plans instead of 13,000. A new connection plans
against the table's current size.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from contextlib import suppress
from typing import TYPE_CHECKING

import asyncpg

if TYPE_CHECKING:
    Connection = asyncpg.Connection[asyncpg.Record]
else:
    Connection = asyncpg.Connection


class PoolTimeout(asyncio.TimeoutError):
    """No connection came free in time."""


class Pool:
    """At most `max_size` connections, opened on demand."""

    def __init__(
        self,
        url: str,
        *,
        max_size: int,
        connect_timeout: float,
        command_timeout: float,
        server_settings: dict[str, str],
        max_lifetime: float = 30.0,
    ) -> None:
        self._url = url
        self._max_size = max_size
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._server_settings = server_settings
        self._max_lifetime = max_lifetime
        self._born: dict[Connection, float] = {}
        self._idle: list[Connection] = []
        self._out: set[Connection] = set()  # handed out, not yet given back
        self._size = 0  # open or opening
        # Each waiter gets a connection, or None meaning "a slot is free: open one".
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self, max_wait: float) -> Connection:
        """A connection for one unit of work; `PoolTimeout` after waiting `max_wait` seconds."""
        while True:
            while self._idle:
                conn = self._idle.pop()
                if not conn.is_closed():
                    self._out.add(conn)
                    return conn
                self._size -= 1
            if self._closed:
                raise asyncpg.InterfaceError("the pool is closed")
            if self._size < self._max_size:
                conn = await self._open()
                self._out.add(conn)
                return conn
            handed = await self._wait(max_wait)
            if handed is not None:
                return handed

    async def _open(self) -> Connection:
        self._size += 1
        try:
            conn: Connection = await asyncpg.connect(
                self._url,
                timeout=self._connect_timeout,
                command_timeout=self._command_timeout,
                server_settings=self._server_settings,
            )
        except BaseException:
            self._size -= 1
            self._wake_one(None)
            raise
        self._born[conn] = time.monotonic()
        return conn

    async def _wait(self, max_wait: float) -> Connection | None:
        waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(max_wait):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                # Handed something at the moment we gave up: pass it on.
                handed = waiter.result()
                if handed is not None:
                    self.release(handed)
                else:
                    self._wake_one(None)
            else:
                with suppress(ValueError):
                    self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise PoolTimeout() from None
            raise

    def _wake_one(self, handed: Connection | None) -> bool:
        """Hand a connection (it stays out) or a free slot to the first live waiter."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(handed)
                return True
        if handed is not None:
            self._out.discard(handed)
        return False

    def release(self, conn: Connection) -> None:
        """Give a connection back after a unit of work (again: a no-op)."""
        if conn not in self._out:
            return
        if (
            conn.is_closed()
            or conn.is_in_transaction()
            or self._closed
            or time.monotonic() - self._born.get(conn, 0.0) > self._max_lifetime
        ):
            self.discard(conn)
            return
        if not self._wake_one(conn):
            self._idle.append(conn)

    def discard(self, conn: Connection) -> None:
        """Close a connection that must not be reused (failed, or left mid-transaction).

        Safe to call more than once, and before `release`."""
        if conn not in self._out:
            return
        self._out.discard(conn)
        self._born.pop(conn, None)
        with suppress(Exception):
            conn.terminate()
        self._size -= 1
        self._wake_one(None)

    async def close(self) -> None:
        """Close every idle connection; those in use are closed as they come back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._size -= 1
            with suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=2)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(asyncpg.InterfaceError("the pool is closed"))

    def terminate(self) -> None:
        """Close every idle connection at once."""
        self._closed = True
        for conn in self._idle:
            conn.terminate()
        self._size -= len(self._idle)
        self._idle = []
