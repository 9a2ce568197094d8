"""What one lock held from each write to its commit would cost: autocommit inserts per second
from 8 connections, without a lock, with a row lock and with an advisory lock.

    python -m bench.commit_lock [--postgres URL] [--seconds S] [--connections N]

Why events are numbered by a sequencer instead (docs/decisions.md, "Events and webhooks"):
a lock taken inside each write is held through its commit's WAL flush, so writes stop
sharing flushes. Runs on its own scratch database, dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import asyncpg

STATEMENTS = {
    "no lock": "INSERT INTO t (v) VALUES ($1)",
    "row lock": "WITH c AS (UPDATE clock SET n = n + 1 WHERE id = 1 RETURNING n) "
    "INSERT INTO t (v) SELECT $1 FROM c",
    "advisory lock": "WITH c AS (SELECT pg_advisory_xact_lock(42)) "
    "INSERT INTO t (v) SELECT $1 FROM c",
}


async def rate(url: str, sql: str, seconds: float, connections: int) -> float:
    conns = [await asyncpg.connect(url) for _ in range(connections)]
    done = 0
    stop = time.perf_counter() + seconds

    async def write(conn: asyncpg.Connection) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await conn.execute(sql, "x")
            done += 1

    try:
        await asyncio.gather(*(write(c) for c in conns))
    finally:
        for conn in conns:
            await conn.close()
    return done / seconds


async def main(server: str, seconds: float, connections: int) -> None:
    name = f"cbstop_bench_lock_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(f"{server}/postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"{server}/{name}"
        setup = await asyncpg.connect(url)
        await setup.execute(
            "CREATE TABLE t (id bigserial PRIMARY KEY, v text);"
            "CREATE TABLE clock (id int PRIMARY KEY, n bigint); INSERT INTO clock VALUES (1, 0)"
        )
        await setup.close()
        for _ in range(2):
            for label, sql in STATEMENTS.items():
                per_second = await rate(url, sql, seconds, connections)
                print(f"{label:>14}: {per_second:8,.0f} inserts/s")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(main(args.postgres, args.seconds, args.connections))
