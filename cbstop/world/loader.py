"""Load a world file in one transaction: all of it, or nothing and an error naming the entry.

A load reads the file and validates its shape (`files.py`), fetches what the database already
holds for the ids the file involves, one query per table (`bulk.py`, the ids named by
`checks.lookups`), checks every entry in pure Python against the file and that snapshot and
plans the new rows (`checks.py`), and writes them (`bulk.py`: COPY on PostgreSQL, one
`executemany` per table on SQLite). A million integrations cost a few seconds of checking. An
entry whose id already exists with the same content is skipped, so loading a file twice
changes nothing.

Keys are hashed with the newest key secret and stored with its fingerprint (CONTRACT 3.6);
`key_secret` is one secret or several, newest first. A file key already stored under an
older secret's hash is the same key (it moves to the newest secret on its next use), so
loading the file again still changes nothing.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cbstop.auth.keys import hash_key, secret_fingerprint
from cbstop.db.database import Connection, sqlite_path
from cbstop.world import bulk, checks, files
from cbstop.world.errors import WorldError
from cbstop.world.progress import Reporter
from cbstop.world.rows import Existing
from cbstop.world.schema import World

__all__ = ["LoadSummary", "WorldError", "load_world", "load_world_file"]

# Past this many rows a load shows a progress bar, writes a table with its foreign keys
# checked once afterwards, and refreshes the planner's statistics.
LARGE = 50_000


@dataclass
class LoadSummary:
    """What a load did: rows added and entries already present, per section."""

    added: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def describe(self) -> str:
        """One line for the command line."""
        added = ", ".join(f"{section} {n}" for section, n in self.added.items() if n)
        same = sum(self.unchanged.values())
        text = f"added {added}" if added else "nothing new"
        if same:
            text += f"; {same} entries already present"
        return f"{text} ({self.seconds:.1f}s)"


def load_world_file(
    database_url: str, path: Path, *, key_secret: str | Sequence[str], progress: bool = False
) -> LoadSummary:
    """Load the world file at `path` into the database."""
    with _gc_paused():
        raw = files.read_json(path)
        return load_world(database_url, raw, key_secret=key_secret, progress=progress)


def load_world(
    database_url: str,
    world: Mapping[str, Any],
    *,
    key_secret: str | Sequence[str],
    progress: bool = False,
) -> LoadSummary:
    """Load a parsed world file into the database, in one transaction."""
    started = time.perf_counter()
    with _gc_paused(), Reporter(progress and files.entry_count(world) >= LARGE) as reporter:
        reporter.step("Validating", 1)
        parsed = files.validate(world)
        secrets = (key_secret,) if isinstance(key_secret, str) else tuple(key_secret)
        summary = asyncio.run(_load(database_url, parsed, world, secrets, reporter))
    summary.seconds = time.perf_counter() - started
    return summary


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Millions of small objects and no cycles: the collector would only burn time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


async def _load(
    url: str, world: World, raw: Mapping[str, Any], secrets: Sequence[str], reporter: Reporter
) -> LoadSummary:
    if not secrets:
        raise WorldError("no key secret is configured (CBSTOP_KEY_SECRET)")
    newest = secrets[0]
    key_hashes = [hash_key(newest, key.secret) for key in world.api_keys]
    # Each key's hash under every older secret, to the hash under the newest.
    older = {
        hash_key(secret, key.secret): key_hash
        for secret in secrets[1:]
        for key, key_hash in zip(world.api_keys, key_hashes, strict=True)
    }
    async with _transaction(url) as conn:
        reporter.step("Reading the database", 1)
        lookups = checks.lookups(world, [*key_hashes, *older])
        existing = _as_newest(await bulk.fetch_existing(conn, lookups), older)
        reporter.step("Checking", 1)
        now = time.time_ns() // 1000
        plan = checks.plan(
            world,
            raw,
            key_hashes=key_hashes,
            key_fingerprint=secret_fingerprint(newest),
            now=now,
            existing=existing,
        )
        await bulk.write(conn, plan, reporter, large=LARGE)
        reporter.step("Committing", 1)
    return LoadSummary(added=plan.added, unchanged=plan.unchanged)


def _as_newest(existing: Existing, older: Mapping[str, str]) -> Existing:
    """The stored keys as the checks compare them: a key stored under an older secret's hash
    counts as stored under the newest one's (it is the same key)."""
    for row in existing.api_keys.values():
        row["key_hash"] = older.get(row["key_hash"], row["key_hash"])
    existing.key_owners = {older.get(h, h): key_id for h, key_id in existing.key_owners.items()}
    return existing


@asynccontextmanager
async def _transaction(url: str) -> AsyncIterator[Connection]:
    """The load's one transaction; a constraint the database enforces becomes a WorldError."""
    if url.startswith(("postgresql://", "postgres://")):
        import asyncpg

        from cbstop.db.postgres import PostgresConnection

        # A connection of its own: the service pool's statement timeout is for requests.
        pg = await asyncpg.connect(url, server_settings={"application_name": "cbstop-load"})
        try:
            async with pg.transaction():
                try:
                    yield PostgresConnection(pg)
                except asyncpg.IntegrityConstraintViolationError as exc:
                    raise WorldError(f"the database refused the world: {exc}") from exc
        finally:
            await pg.close()
        return
    import sqlite3

    from cbstop.db.sqlite import SqliteDatabase

    db = SqliteDatabase.open(sqlite_path(url))
    try:
        async with db.transaction(write=True) as lite:
            try:
                yield lite
            except sqlite3.IntegrityError as exc:
                raise WorldError(f"the database refused the world: {exc}") from exc
    finally:
        await db.close()
