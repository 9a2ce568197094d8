"""The PostgreSQL connection pool: bounded, exact in its accounting, never queueing forever."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast

import pytest

from cbstop.db.pool import Connection, Pool, PoolClosed, PoolTimeout


def _pool(url: str, max_size: int = 2) -> Pool:
    return Pool(url, max_size=max_size, connect_timeout=2, command_timeout=5, server_settings={})


def test_a_released_connection_is_reused_not_reopened(postgres_url: str) -> None:
    async def scenario() -> None:
        pool = _pool(postgres_url)
        first = await pool.acquire(1)
        pid = first.get_server_pid()
        pool.release(first)
        again = await pool.acquire(1)
        assert again.get_server_pid() == pid
        assert (pool.size, pool.idle) == (1, 0)
        pool.release(again)
        assert (pool.size, pool.idle) == (1, 1)
        await pool.close()

    asyncio.run(scenario())


def test_past_max_size_a_request_waits_then_times_out(postgres_url: str) -> None:
    async def scenario() -> None:
        pool = _pool(postgres_url, max_size=1)
        held = await pool.acquire(1)
        started = time.monotonic()
        with pytest.raises(PoolTimeout):
            await pool.acquire(0.2)
        assert 0.15 <= time.monotonic() - started < 1.0
        assert (pool.size, pool.waiting) == (1, 0)
        pool.release(held)
        await pool.close()

    asyncio.run(scenario())


def test_a_waiter_gets_the_connection_released_before_its_deadline(postgres_url: str) -> None:
    async def scenario() -> None:
        pool = _pool(postgres_url, max_size=1)
        held = await pool.acquire(1)
        waiting = asyncio.create_task(pool.acquire(2))
        await asyncio.sleep(0.05)
        assert pool.waiting == 1
        pool.release(held)
        handed = await waiting
        assert handed is held
        pool.release(handed)
        assert (pool.size, pool.idle, pool.waiting) == (1, 1, 0)
        await pool.close()

    asyncio.run(scenario())


def test_discarding_twice_and_then_releasing_frees_exactly_one_slot(postgres_url: str) -> None:
    async def scenario() -> None:
        pool = _pool(postgres_url, max_size=2)
        broken = await pool.acquire(1)
        other = await pool.acquire(1)
        pool.discard(broken)
        pool.discard(broken)
        pool.release(broken)
        assert pool.size == 1
        replacement = await pool.acquire(1)
        assert pool.size == 2
        with pytest.raises(PoolTimeout):
            await pool.acquire(0.1)
        pool.release(other)
        pool.release(replacement)
        await pool.close()

    asyncio.run(scenario())


def test_a_connection_left_inside_a_transaction_is_not_reused(postgres_url: str) -> None:
    async def scenario() -> None:
        pool = _pool(postgres_url, max_size=1)
        conn = await pool.acquire(1)
        await conn.execute("BEGIN")
        pool.release(conn)
        assert (pool.size, pool.idle) == (0, 0)
        fresh = await pool.acquire(1)
        assert fresh is not conn and not fresh.is_in_transaction()
        pool.release(fresh)
        await pool.close()

    asyncio.run(scenario())


def test_a_connection_past_its_lifetime_is_replaced_not_reused(postgres_url: str) -> None:
    async def scenario() -> None:
        pool = Pool(
            postgres_url,
            max_size=1,
            connect_timeout=2,
            command_timeout=5,
            server_settings={},
            max_lifetime=0.05,
        )
        first = await pool.acquire(1)
        pid = first.get_server_pid()
        await asyncio.sleep(0.1)
        pool.release(first)
        assert (pool.size, pool.idle) == (0, 0)
        second = await pool.acquire(1)
        assert second.get_server_pid() != pid
        pool.release(second)
        await pool.close()

    asyncio.run(scenario())


def test_a_connection_killed_while_idle_is_forgotten_at_once(postgres_url: str) -> None:
    async def scenario() -> None:
        pool = _pool(postgres_url, max_size=2)
        victim = await pool.acquire(1)
        killer = await pool.acquire(1)
        pool.release(victim)
        assert (pool.size, pool.idle) == (2, 1)
        await killer.execute("SELECT pg_terminate_backend($1)", victim.get_server_pid())
        deadline = time.monotonic() + 2
        while pool.idle and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        # Noticed through asyncpg's termination listener, before any acquire looks at it.
        assert (pool.size, pool.idle, pool.waiting) == (1, 0, 0)
        pool.release(killer)
        await pool.close()

    asyncio.run(scenario())


# --- the failure paths, on fake connections (no database) --------------------------------


class FakeConnection:
    """Just what the pool uses of an asyncpg connection, with asyncpg's listener timing."""

    def __init__(self) -> None:
        self.closed = False
        self.closed_gracefully = False
        self.in_transaction = False
        self.hang_on_close = False
        self._listeners: list[Callable[[FakeConnection], None]] = []

    def is_closed(self) -> bool:
        return self.closed

    def is_in_transaction(self) -> bool:
        return self.in_transaction

    def add_termination_listener(self, callback: Callable[[FakeConnection], None]) -> None:
        self._listeners.append(callback)

    def terminate(self) -> None:
        self._lost()

    async def close(self, *, timeout: float | None = None) -> None:
        if self.hang_on_close:
            await asyncio.Event().wait()
        self.closed_gracefully = True
        self._lost()

    def die(self) -> None:
        """The server or the network closed it."""
        self._lost()

    def _lost(self) -> None:
        if self.closed:
            return
        self.closed = True
        # asyncpg calls termination listeners with call_soon, not inline.
        loop = asyncio.get_running_loop()
        for callback in self._listeners:
            loop.call_soon(callback, self)
        self._listeners.clear()


class FakeDatabase:
    """Stands in for asyncpg.connect: connects at once, or when `gate` opens, or refuses."""

    def __init__(self) -> None:
        self.opened: list[FakeConnection] = []
        self.gate: asyncio.Event | None = None
        self.refusals = 0  # how many of the next connects fail

    async def connect(self, url: str, **options: object) -> Connection:
        if self.gate is not None:
            await self.gate.wait()
        if self.refusals:
            self.refusals -= 1
            raise ConnectionRefusedError("refused")
        conn = FakeConnection()
        self.opened.append(conn)
        return cast(Connection, conn)

    def pool(self, max_size: int = 1) -> Pool:
        return Pool(
            "postgresql://fake",
            max_size=max_size,
            connect_timeout=1,
            command_timeout=1,
            server_settings={},
            connect=self.connect,
        )


def _fake(conn: Connection) -> FakeConnection:
    return cast(FakeConnection, conn)


def _counters(pool: Pool) -> tuple[int, int, int]:
    return pool.size, pool.idle, pool.waiting


def _tracked(pool: Pool) -> int:
    """Connections the lifetime bookkeeping still holds."""
    return len(pool._born)


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


def test_an_acquirer_cancelled_while_waiting_leaks_no_slot_and_the_next_is_served() -> None:
    async def scenario() -> None:
        pool = FakeDatabase().pool(max_size=1)
        held = await pool.acquire(1)
        cancelled = asyncio.create_task(pool.acquire(30))
        served = asyncio.create_task(pool.acquire(30))
        await _until(lambda: pool.waiting == 2)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert _counters(pool) == (1, 0, 1)
        pool.release(held)
        assert await served is held
        assert _counters(pool) == (1, 0, 0)
        pool.release(held)
        assert _counters(pool) == (1, 1, 0)

    asyncio.run(scenario())


def test_a_waiter_cancelled_as_it_is_handed_a_connection_passes_it_to_the_next() -> None:
    async def scenario() -> None:
        pool = FakeDatabase().pool(max_size=1)
        held = await pool.acquire(1)
        cancelled = asyncio.create_task(pool.acquire(30))
        served = asyncio.create_task(pool.acquire(30))
        await _until(lambda: pool.waiting == 2)
        pool.release(held)  # handed to the first waiter, which has not run yet
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert await served is held
        assert _counters(pool) == (1, 0, 0)

    asyncio.run(scenario())


def test_an_acquirer_cancelled_while_its_connection_opens_frees_its_slot() -> None:
    async def scenario() -> None:
        db = FakeDatabase()
        db.gate = asyncio.Event()
        pool = db.pool(max_size=1)
        opening = asyncio.create_task(pool.acquire(30))
        await _until(lambda: pool.size == 1)
        waiting = asyncio.create_task(pool.acquire(30))
        await _until(lambda: pool.waiting == 1)
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
        # The slot passed to the waiter, which now opens its own connection.
        assert _counters(pool) == (1, 0, 0)
        db.gate.set()
        conn = await waiting
        assert db.opened == [_fake(conn)]
        pool.release(conn)
        assert _counters(pool) == (1, 1, 0)

    asyncio.run(scenario())


def test_an_acquirer_cancelled_while_opening_with_no_waiter_leaves_the_pool_empty() -> None:
    async def scenario() -> None:
        db = FakeDatabase()
        db.gate = asyncio.Event()
        pool = db.pool(max_size=1)
        opening = asyncio.create_task(pool.acquire(30))
        await _until(lambda: pool.size == 1)
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
        assert _counters(pool) == (0, 0, 0)
        db.gate.set()
        pool.release(await pool.acquire(1))
        assert _counters(pool) == (1, 1, 0)

    asyncio.run(scenario())


def test_a_failed_connect_returns_its_slot_and_the_waiter_opens_one() -> None:
    async def scenario() -> None:
        db = FakeDatabase()
        db.gate = asyncio.Event()
        db.refusals = 1
        pool = db.pool(max_size=1)
        refused = asyncio.create_task(pool.acquire(30))
        await _until(lambda: pool.size == 1)
        waiting = asyncio.create_task(pool.acquire(30))
        await _until(lambda: pool.waiting == 1)
        db.gate.set()
        with pytest.raises(ConnectionRefusedError):
            await refused
        conn = await waiting
        assert db.opened == [_fake(conn)]
        assert _counters(pool) == (1, 0, 0)
        pool.release(conn)
        assert (*_counters(pool), _tracked(pool)) == (1, 1, 0, 1)

    asyncio.run(scenario())


def test_close_fails_every_waiter_at_once_and_closes_the_held_connection_on_release() -> None:
    async def scenario() -> None:
        pool = FakeDatabase().pool(max_size=1)
        held = await pool.acquire(1)
        waiters = [asyncio.create_task(pool.acquire(30)) for _ in range(3)]
        await _until(lambda: pool.waiting == 3)
        started = time.monotonic()
        await pool.close()
        outcomes = await asyncio.gather(*waiters, return_exceptions=True)
        assert time.monotonic() - started < 0.5
        assert [type(o) for o in outcomes] == [PoolClosed] * 3
        assert _counters(pool) == (1, 0, 0)
        pool.release(held)
        assert _fake(held).closed
        assert (*_counters(pool), _tracked(pool)) == (0, 0, 0, 0)

    asyncio.run(scenario())


def test_terminate_fails_every_waiter_at_once() -> None:
    async def scenario() -> None:
        pool = FakeDatabase().pool(max_size=1)
        held = await pool.acquire(1)
        waiters = [asyncio.create_task(pool.acquire(30)) for _ in range(3)]
        await _until(lambda: pool.waiting == 3)
        started = time.monotonic()
        pool.terminate()
        outcomes = await asyncio.gather(*waiters, return_exceptions=True)
        assert time.monotonic() - started < 0.5
        assert [type(o) for o in outcomes] == [PoolClosed] * 3
        assert _counters(pool) == (1, 0, 0)
        pool.release(held)
        assert (*_counters(pool), _tracked(pool)) == (0, 0, 0, 0)

    asyncio.run(scenario())


def test_a_waiter_handed_a_slot_as_the_pool_closes_gives_the_slot_back() -> None:
    async def scenario() -> None:
        db = FakeDatabase()
        pool = db.pool(max_size=1)
        broken = await pool.acquire(1)
        waiting = asyncio.create_task(pool.acquire(30))
        await _until(lambda: pool.waiting == 1)
        pool.discard(broken)  # the slot passes to the waiter, which has not run yet
        pool.terminate()
        with pytest.raises(PoolClosed):
            await waiting
        assert len(db.opened) == 1
        assert (*_counters(pool), _tracked(pool)) == (0, 0, 0, 0)

    asyncio.run(scenario())


def test_a_waiter_handed_a_connection_as_the_pool_closes_closes_it() -> None:
    async def scenario() -> None:
        pool = FakeDatabase().pool(max_size=1)
        held = await pool.acquire(1)
        waiting = asyncio.create_task(pool.acquire(30))
        await _until(lambda: pool.waiting == 1)
        pool.release(held)  # handed to the waiter, which has not run yet
        pool.terminate()
        with pytest.raises(PoolClosed):
            await waiting
        assert _fake(held).closed
        assert (*_counters(pool), _tracked(pool)) == (0, 0, 0, 0)

    asyncio.run(scenario())


def test_a_connection_opened_as_the_pool_closes_is_closed_not_handed_out() -> None:
    async def scenario() -> None:
        db = FakeDatabase()
        db.gate = asyncio.Event()
        pool = db.pool(max_size=1)
        opening = asyncio.create_task(pool.acquire(30))
        await _until(lambda: pool.size == 1)
        await pool.close()
        db.gate.set()
        with pytest.raises(PoolClosed):
            await opening
        assert [c.closed for c in db.opened] == [True]
        assert (*_counters(pool), _tracked(pool)) == (0, 0, 0, 0)

    asyncio.run(scenario())


def test_close_closes_idle_connections_gracefully() -> None:
    async def scenario() -> None:
        db = FakeDatabase()
        pool = db.pool(max_size=2)
        first, second = await pool.acquire(1), await pool.acquire(1)
        pool.release(first)
        pool.release(second)
        await pool.close()
        assert [c.closed_gracefully for c in db.opened] == [True, True]
        assert (*_counters(pool), _tracked(pool)) == (0, 0, 0, 0)
        with pytest.raises(PoolClosed):
            await pool.acquire(1)

    asyncio.run(scenario())


def test_close_cut_short_terminates_the_idle_connections_still_closing() -> None:
    async def scenario() -> None:
        db = FakeDatabase()
        pool = db.pool(max_size=2)
        first, second = await pool.acquire(1), await pool.acquire(1)
        _fake(first).hang_on_close = True
        pool.release(first)
        pool.release(second)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pool.close(), timeout=0.05)
        assert [c.closed for c in db.opened] == [True, True]
        assert (*_counters(pool), _tracked(pool)) == (0, 0, 0, 0)

    asyncio.run(scenario())


def test_a_connection_that_dies_while_idle_is_forgotten_entirely() -> None:
    async def scenario() -> None:
        db = FakeDatabase()
        pool = db.pool(max_size=2)
        first, second = await pool.acquire(1), await pool.acquire(1)
        pool.release(first)
        pool.release(second)
        _fake(first).die()
        await _until(lambda: pool.idle == 1)
        assert (*_counters(pool), _tracked(pool)) == (1, 1, 0, 1)
        # Its slot is free again: two can be out at once.
        again, fresh = await pool.acquire(1), await pool.acquire(1)
        assert again is second and fresh not in (first, second)
        assert (*_counters(pool), _tracked(pool)) == (2, 0, 0, 2)

    asyncio.run(scenario())


def test_a_dead_connection_found_on_acquire_is_forgotten_once() -> None:
    async def scenario() -> None:
        db = FakeDatabase()
        pool = db.pool(max_size=2)
        first, second = await pool.acquire(1), await pool.acquire(1)
        pool.release(first)
        pool.release(second)
        _fake(second).die()  # on top of the idle list; its listener has not run yet
        conn = await pool.acquire(1)
        assert conn is first
        assert (*_counters(pool), _tracked(pool)) == (1, 0, 0, 1)
        await asyncio.sleep(0)  # the listener runs now, and finds nothing left to forget
        assert (*_counters(pool), _tracked(pool)) == (1, 0, 0, 1)
        pool.release(conn)

    asyncio.run(scenario())


def test_a_connection_released_after_close_is_closed() -> None:
    async def scenario() -> None:
        pool = FakeDatabase().pool(max_size=1)
        conn = await pool.acquire(1)
        await pool.close()
        assert _counters(pool) == (1, 0, 0)
        pool.release(conn)
        assert _fake(conn).closed
        assert (*_counters(pool), _tracked(pool)) == (0, 0, 0, 0)

    asyncio.run(scenario())


def test_releasing_twice_is_harmless() -> None:
    async def scenario() -> None:
        pool = FakeDatabase().pool(max_size=1)
        conn = await pool.acquire(1)
        pool.release(conn)
        pool.release(conn)
        assert (*_counters(pool), _tracked(pool)) == (1, 1, 0, 1)
        assert await pool.acquire(1) is conn
        with pytest.raises(PoolTimeout):
            await pool.acquire(0.01)
        assert _counters(pool) == (1, 0, 0)

    asyncio.run(scenario())
