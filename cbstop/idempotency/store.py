"""The answers of successful keyed writes: recalled, remembered, retried, purged.

An answer is remembered by the write's own unit of work — in the same statement as a create
on PostgreSQL (`integrations/sql_postgres.py`), in the same transaction otherwise — so a
crash leaves either the write and its answer or neither. The primary key (owner, key) is
what makes one key produce at most one write, however many processes run: a duplicate that
got past the recall while the first was in flight blocks on the first's uncommitted row,
then fails with a unique violation once the first commits, and its own write rolls back;
`run_keyed` then runs it again, and this time it finds the answer. If the first failed, its
row never existed and the duplicate goes ahead.

A duplicate waits for the first in flight up to `IN_FLIGHT_WAIT` seconds: on PostgreSQL in
slices of `lock_timeout`, on SQLite for the file's write lock; then `IdempotencyKeyInUse`.

Answers older than the TTL count as absent wherever they are read (`Keyed.alive`); a writer
that finds one deletes it in its own unit of work. `Purger` deletes the rest in the
background, in small batches, so no request waits on it (on SQLite a write may queue behind
one batch's few milliseconds).

A stored answer never changes until it expires, so each process also keeps the answers it
stored or recalled last (`AnswerCache`): a retry that reaches the same process is answered
from memory, before its body is validated, as a recall would have been.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from cbstop.db.database import Connection, Database, Row, UniqueViolation
from cbstop.errors import (
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    LockWaitExpired,
    ServiceUnavailable,
)
from cbstop.idempotency.keys import Answer, Keyed, now_micros
from cbstop.observability.logging import log
from cbstop.tasks import cancelled

T = TypeVar("T")

IN_FLIGHT_WAIT = 5.0  # seconds a duplicate waits for its first request (CONTRACT 3.1)
# Runs of one keyed write that lost its key to a concurrent writer, before giving up: the
# next run finds the winner's answer, so more than two means something else is wrong.
MAX_RUNS = 5
PURGE_BATCH = 500

# The stored answer's columns, in this order wherever a statement returns them.
COLUMNS = "fingerprint, created_at, status_code, body, location, etag"

RECALL = f"SELECT {COLUMNS} FROM idempotency_keys WHERE owner = $1 AND key = $2"

REMEMBER = """
INSERT INTO idempotency_keys
    (owner, key, fingerprint, created_at, status_code, body, location, etag)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""

# $1 owner, $2 key, $3 cutoff: the key's answer, only if it has expired.
FORGET_EXPIRED = "DELETE FROM idempotency_keys WHERE owner = $1 AND key = $2 AND created_at < $3"

# $1 cutoff, $2 batch size. Rows another purger is deleting are skipped, not waited for.
PURGE_POSTGRES = """
WITH gone AS (
    DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM idempotency_keys WHERE created_at < $1
        LIMIT $2 FOR UPDATE SKIP LOCKED))
    RETURNING 1
)
SELECT count(*) FROM gone
"""
PURGE_SQLITE = """
DELETE FROM idempotency_keys WHERE rowid IN (
    SELECT rowid FROM idempotency_keys WHERE created_at < $1 LIMIT $2)
RETURNING 1
"""


class Expired(Exception):
    """The key's answer is older than the TTL: delete it, then run the write again."""


def stored(keyed: Keyed, row: Row | None, offset: int = 0) -> Answer | None:
    """The answer in `row[offset:]` (COLUMNS) if it is this request's: None if there is none;
    `IdempotencyKeyReused` if it is another request's; `Expired` if it is too old."""
    if row is None or row[offset] is None:
        return None
    fingerprint, created_at, status, body, location, etag = row[offset : offset + 6]
    if not keyed.alive(created_at):
        raise Expired()
    if bytes(fingerprint) != keyed.fingerprint:
        raise IdempotencyKeyReused()
    return Answer(status, bytes(body), location, etag, created_at)


async def recall(conn: Connection, keyed: Keyed) -> Answer | None:
    """This request's stored answer, if any (an expired one counts as none)."""
    try:
        return stored(keyed, await conn.fetchrow(RECALL, keyed.owner, keyed.key))
    except Expired:
        return None


async def recall_for_write(conn: Connection, keyed: Keyed) -> Answer | None:
    """`recall` inside a write's unit of work: an expired answer is deleted there, so the
    write can remember its own under the same key."""
    try:
        return stored(keyed, await conn.fetchrow(RECALL, keyed.owner, keyed.key))
    except Expired:
        await conn.execute(FORGET_EXPIRED, keyed.owner, keyed.key, keyed.cutoff)
        return None


async def remember(conn: Connection, keyed: Keyed, answer: Answer) -> None:
    """Store the answer, inside the write's own unit of work."""
    await conn.execute(
        REMEMBER,
        keyed.owner,
        keyed.key,
        keyed.fingerprint,
        keyed.now,
        answer.status,
        answer.body,
        answer.location,
        answer.etag,
    )


# PostgreSQL: the answers of several writes at once, one array per column.
REMEMBER_MANY = """
INSERT INTO idempotency_keys
    (owner, key, fingerprint, created_at, status_code, body, location, etag)
SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bigint[], $5::integer[],
                     $6::bytea[], $7::text[], $8::text[])
"""


async def remember_many(conn: Connection, answers: Sequence[tuple[Keyed, Answer]]) -> None:
    """`remember` for several writes of one unit of work, in one statement (PostgreSQL)."""
    if not answers:
        return
    # In the keys' order, as every batch inserts them: two batches never wait on each other
    # in opposite orders.
    rows = sorted(
        (k.owner, k.key, k.fingerprint, k.now, a.status, a.body, a.location, a.etag)
        for k, a in answers
    )
    await conn.execute(REMEMBER_MANY, *(list(column) for column in zip(*rows, strict=True)))


async def forget_expired(db: Database, keyed: Keyed) -> None:
    """Delete the key's answer if it has expired (before running its write again)."""
    async with db.single_statement_write() as conn:
        await conn.execute(FORGET_EXPIRED, keyed.owner, keyed.key, keyed.cutoff)


async def run_keyed(
    db: Database, keyed: Keyed | None, write: Callable[[float | None], Awaitable[T]]
) -> T:
    """Run `write(lock_wait)` — one unit of work that recalls, or writes and remembers —
    until it completes.

    Without a key it runs once, as any write. With one, it runs again when a concurrent
    writer took the key first (`UniqueViolation`: the next run finds that writer's answer),
    when it found an expired answer (deleted first), and when a lock wait ran out, until
    `IN_FLIGHT_WAIT` has passed: then `IdempotencyKeyInUse`. `lock_wait` is what is left of
    that wait, for SQLite's write lock.
    """
    if keyed is None:
        return await write(None)
    deadline = time.monotonic() + IN_FLIGHT_WAIT
    runs = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise IdempotencyKeyInUse()
        runs += 1
        try:
            return await write(left)
        except LockWaitExpired:
            continue
        except Expired:
            await forget_expired(db, keyed)
        except UniqueViolation:
            pass
        if runs >= MAX_RUNS:
            raise IdempotencyKeyInUse()


async def purge(db: Database, cutoff: int) -> int:
    """Delete every answer stored before `cutoff`, a batch per unit of work; how many."""
    sql = PURGE_POSTGRES if db.dialect == "postgresql" else PURGE_SQLITE
    total = 0
    while True:
        async with db.single_statement_write() as conn:
            if db.dialect == "postgresql":
                gone = int(await conn.fetchval(sql, cutoff, PURGE_BATCH))
            else:
                gone = len(await conn.fetch(sql, cutoff, PURGE_BATCH))
        total += gone
        if gone < PURGE_BATCH:
            return total
        await asyncio.sleep(0)  # let requests in between batches


class AnswerCache:
    """The answers this process stored or recalled last, by (owner, key): at most `size`
    (the oldest go first), each until its key expires. An entry is what the database holds:
    a stored answer changes only by expiring (a new request under the key after the TTL is
    stored with a later time, and the old entry has expired by then)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: dict[tuple[str, str], tuple[bytes, int, Answer]] = {}

    def recall(self, keyed: Keyed) -> Answer | None:
        """This request's answer if it is kept here; `IdempotencyKeyReused` if the key's
        answer is another request's; None if the key is not kept (or has expired)."""
        entry = self._entries.get((keyed.owner, keyed.key))
        if entry is None:
            return None
        fingerprint, stored_at, answer = entry
        if not keyed.alive(stored_at):
            del self._entries[(keyed.owner, keyed.key)]
            return None
        if fingerprint != keyed.fingerprint:
            raise IdempotencyKeyReused()
        return answer

    def keep(self, keyed: Keyed, answer: Answer) -> None:
        """Remember an answer stored under `keyed` (one with `stored_at`)."""
        if self._size <= 0 or answer.stored_at is None:
            return
        entries = self._entries
        if len(entries) >= self._size:
            del entries[next(iter(entries))]
        entries[(keyed.owner, keyed.key)] = (keyed.fingerprint, answer.stored_at, answer)


class Purger:
    """Deletes expired answers every `interval` seconds, in the background."""

    def __init__(self, db: Database, ttl: float, interval: float) -> None:
        self._db = db
        self._ttl = ttl
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="cbstop-purge")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancelled(task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                gone = await purge(self._db, now_micros() - int(self._ttl * 1_000_000))
            except ServiceUnavailable:
                continue  # the database's trouble is logged by the requests that meet it
            except Exception:
                log.exception("purging expired idempotency keys failed")
                continue
            if gone:
                log.info("purged %d expired idempotency keys", gone)
