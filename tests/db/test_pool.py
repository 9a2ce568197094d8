"""The PostgreSQL connection pool: bounded, exact in its accounting, never queueing forever."""

from __future__ import annotations

import asyncio
import time

import pytest

from cbstop.db.pool import Pool, PoolTimeout


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
