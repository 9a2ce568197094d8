"""A small pool of asyncpg connections, made for the hot path.

asyncpg's own pool spends a task (`asyncio.shield`) and a timer (`timeout`) on every
release, and a timer on every acquire: py-spy put those at about a fifth of a worker's time
on GET one. Here a release is a list append (or a hand-over to a waiter), and a timer is
armed only when a request must wait for a connection. Measured again against asyncpg's pool
with its reset turned off (`reset=` a no-op) and `max_cached_statement_lifetime=30` in place
of retiring connections: an acquire and release of a free connection cost 35 us there and
1 us here, and one worker served GET one on a 100k world at 0.55-0.90 of this pool's req/s
(medians of six interleaved sets of wrk -t1 -c16 -d5s). Connections are used only in whole
units of work, so nothing needs resetting; one that is closed or left inside a transaction
is thrown away instead of being reused.

A connection also retires after `max_lifetime` seconds. Sessions keep generic plans for the
life of a connection, and a plan made when a table was small (a new deployment, a fresh
world) reads it with sequential scans: the benchmark's 1k world, grown to 80k rows by its own
creates, served GET one at 594 req/s on such plans instead of 13,000. A new connection plans
against the table's current size.

The accounting, which the tests check with fake connections:

- `size` counts connections open, being opened, and slots handed to a waiter that is about
  to open one. A slot freed (a connection discarded, a connect failed, an acquirer cancelled)
  passes straight to the first waiter, so a newcomer cannot take it from under a waiter.
- A connection that dies while idle (the server restarted, the network cut it) is forgotten
  the moment asyncpg notices, through its termination listener, and at the latest when an
  acquirer finds it closed.
- `close()` and `terminate()` fail every waiter at once with `PoolClosed`; connections in use
  are closed as they come back.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import asyncpg

if TYPE_CHECKING:
    Connection = asyncpg.Connection[asyncpg.Record]
else:
    Connection = asyncpg.Connection

# asyncpg.connect, or a stand-in with its signature (the tests' fake connections).
Connect = Callable[..., Awaitable[Connection]]


class PoolTimeout(asyncio.TimeoutError):
    """No connection came free in time."""


class PoolClosed(asyncpg.InterfaceError):
    """The pool was closed: no connection will come."""

    def __init__(self) -> None:
        super().__init__("the pool is closed")


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
        connect: Connect = asyncpg.connect,
    ) -> None:
        self._url = url
        self._max_size = max_size
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._server_settings = server_settings
        self._max_lifetime = max_lifetime
        self._connect = connect
        self._born: dict[Connection, float] = {}  # every open connection, idle or out
        self._idle: list[Connection] = []
        self._out: set[Connection] = set()  # handed out, not yet given back
        self._size = 0  # open, opening, or a slot handed to a waiter
        # Each waiter gets a connection, or None meaning "a slot is yours: open one".
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
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.is_closed():
                self._out.add(conn)
                return conn
            self._forget(conn)
        if self._closed:
            raise PoolClosed()
        if self._size < self._max_size:
            self._size += 1
            return await self._open()
        handed = await self._wait(max_wait)
        if handed is None:
            return await self._open()
        if self._closed:
            # Handed over just before the pool closed: no unit of work starts after close().
            self.discard(handed)
            raise PoolClosed()
        return handed

    async def _open(self) -> Connection:
        """Open a connection on a slot already counted in `size`; free the slot on failure."""
        if self._closed:
            self._free_slot()
            raise PoolClosed()
        try:
            conn: Connection = await self._connect(
                self._url,
                timeout=self._connect_timeout,
                command_timeout=self._command_timeout,
                server_settings=self._server_settings,
            )
        except BaseException:
            # Refused, timed out, or the acquirer was cancelled: asyncpg has closed the socket.
            self._free_slot()
            raise
        if self._closed:
            with suppress(Exception):
                conn.terminate()
            self._free_slot()
            raise PoolClosed()
        self._born[conn] = time.monotonic()
        self._out.add(conn)
        conn.add_termination_listener(self._terminated)
        return conn

    async def _wait(self, max_wait: float) -> Connection | None:
        waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(max_wait):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Handed a connection or a slot at the moment we gave up: pass it on.
                handed = waiter.result()
                if handed is None:
                    self._free_slot()
                else:
                    self.release(handed)
            else:
                with suppress(ValueError):
                    self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise PoolTimeout() from None
            raise

    def _next_waiter(self) -> asyncio.Future[Connection | None] | None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                return waiter
        return None

    def _free_slot(self) -> None:
        """A slot came free: it passes to the first waiter, which opens a connection on it."""
        waiter = self._next_waiter()
        if waiter is None:
            self._size -= 1
        else:
            waiter.set_result(None)

    def _forget(self, conn: Connection) -> None:
        """Drop a dead connection already taken off the idle list."""
        del self._born[conn]
        self._free_slot()

    def _terminated(self, conn: Any) -> None:
        """asyncpg's termination listener: a connection closed, by us or by its peer."""
        # Ours (discarded, closed, retired) are no longer idle; only a death while idle is news.
        if conn in self._idle:
            self._idle.remove(conn)
            self._forget(conn)

    def release(self, conn: Connection) -> None:
        """Give a connection back after a unit of work (again: a no-op)."""
        if conn not in self._out:
            return
        if (
            conn.is_closed()
            or conn.is_in_transaction()
            or self._closed
            or time.monotonic() - self._born[conn] > self._max_lifetime
        ):
            self.discard(conn)
            return
        if self._waiters:
            waiter = self._next_waiter()
            if waiter is not None:
                waiter.set_result(conn)  # it stays out: the waiter holds it now
                return
        self._out.discard(conn)
        self._idle.append(conn)

    def discard(self, conn: Connection) -> None:
        """Close a connection that must not be reused (failed, or left mid-transaction).

        Safe to call more than once, and before `release`."""
        if conn not in self._out:
            return
        self._out.discard(conn)
        del self._born[conn]
        with suppress(Exception):
            conn.terminate()
        self._free_slot()

    def _shut(self) -> list[Connection]:
        """Mark the pool closed, fail every waiter now, and take the idle connections."""
        self._closed = True
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(PoolClosed())
        idle, self._idle = self._idle, []
        for conn in idle:
            del self._born[conn]
        self._size -= len(idle)
        return idle

    async def close(self) -> None:
        """Fail every waiter, close the idle connections; those in use close as they come back."""
        idle = self._shut()
        try:
            await asyncio.gather(*(self._close_one(conn) for conn in idle))
        finally:
            # Cancelled (the caller's deadline): what did not close in time is cut.
            for conn in idle:
                if not conn.is_closed():
                    with suppress(Exception):
                        conn.terminate()

    @staticmethod
    async def _close_one(conn: Connection) -> None:
        with suppress(Exception):
            await conn.close(timeout=2)

    def terminate(self) -> None:
        """Fail every waiter and cut every idle connection, at once."""
        for conn in self._shut():
            with suppress(Exception):
                conn.terminate()
