"""Key upkeep's failure paths, on both databases: a write the database refuses for a while
(another session holds the rows) loses nothing that matters. A lost re-hash leaves the key
where it was and is made again on the key's next use; lost last uses are kept and written
on the next round."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from cbstop.auth.keys import hash_key, secret_fingerprint
from cbstop.auth.service import Authenticator
from cbstop.auth.upkeep import KeyUpkeep
from cbstop.db.database import open_database, sqlite_path
from cbstop.world.loader import load_world
from tests.integrations.helpers import secret, world
from tests.support import TEST_KEY_SECRET, make_settings, query

OLD = TEST_KEY_SECRET
NEW = "the-newest-key-secret-0123456789"
INTERVAL = 0.1  # seconds between two rounds of last-use writes
# Long enough for a re-hash and a round of last uses to be tried, wait for the lock (at most
# 1 s on SQLite, 1.35 s on PostgreSQL) and fail.
LOCKED_FOR = 4.0
STORED = "SELECT key_hash, secret_fingerprint, last_used_at FROM api_keys WHERE id = ?"


@contextmanager
def rows_locked(url: str) -> Iterator[None]:
    """Another session holds what the writes need: SQLite's write lock, or every key row on
    PostgreSQL; reads go on. It changes nothing and lets go when the block ends."""
    if url.startswith("sqlite:///"):
        side = sqlite3.connect(sqlite_path(url), isolation_level=None, timeout=0)
        try:
            side.execute("BEGIN IMMEDIATE")
            yield
            side.execute("ROLLBACK")
        finally:
            side.close()
        return
    with psycopg.connect(url) as pg:
        pg.execute("SELECT id FROM api_keys FOR UPDATE").fetchall()
        yield
        pg.rollback()


def stored(url: str) -> tuple[Any, ...]:
    [row] = query(url, STORED, "key_org_a1")
    return row


async def eventually(url: str, wanted: Any, part: slice) -> None:
    deadline = time.monotonic() + 15
    while stored(url)[part] != wanted:
        assert time.monotonic() < deadline, stored(url)
        await asyncio.sleep(0.05)


async def scenario(url: str, key: str) -> None:
    settings = make_settings(url, key_secret=f"{NEW},{OLD}")
    db = await open_database(url, settings)
    upkeep = KeyUpkeep(db, INTERVAL)
    # No cache, so each use looks the key up (as one does after `key_cache_ttl`).
    authenticator = Authenticator(db, settings.key_secrets, 0, upkeep)
    upkeep.start()
    try:
        before = stored(url)
        assert before == (hash_key(OLD, key), secret_fingerprint(OLD), None)
        with rows_locked(url):
            principal = await authenticator.authenticate(f"Bearer {key}")
            assert principal.key_id == "key_org_a1"
            await asyncio.sleep(LOCKED_FOR)
            assert stored(url) == before
        # The last use was kept and is written on a later round; the re-hash was dropped.
        deadline = time.monotonic() + 15
        while stored(url)[2] is None:
            assert time.monotonic() < deadline, "the kept last use was never written"
            await asyncio.sleep(0.05)
        assert stored(url)[:2] == before[:2]
        # The key's next use finds it under the old secret again and moves it.
        await authenticator.authenticate(f"Bearer {key}")
        await eventually(url, (hash_key(NEW, key), secret_fingerprint(NEW)), slice(0, 2))
    finally:
        await upkeep.stop()
        await db.close()


def test_a_refused_upkeep_write_loses_no_last_use_and_the_rehash_is_made_on_next_use(
    database_url: str,
) -> None:
    matrix = world("matrix")
    load_world(database_url, matrix, key_secret=OLD)
    started = time.time_ns() // 1000
    asyncio.run(scenario(database_url, secret(matrix, "key_org_a1")))
    minute = stored(database_url)[2]
    assert minute % 60_000_000 == 0
    assert started - started % 60_000_000 <= minute <= time.time_ns() // 1000
