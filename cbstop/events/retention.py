"""Events are kept `CBSTOP_EVENT_RETENTION_DAYS` (CONTRACT 3.4), then deleted in the
background with the webhook deliveries made for them and the attempts older than they are.
Events go oldest number first, which is oldest first to within the milliseconds a write
takes to commit; one still unnumbered (no sequencer has run since it was written) waits.

Deletes go in small batches, each its own unit of work, so no request waits long behind one
(on SQLite a write may queue behind one batch's few milliseconds). A delivery still pending
past the retention is deleted too: its event is gone, and no schedule runs that long.
"""

from __future__ import annotations

import asyncio

from cbstop.db.database import Database

BATCH = 500

# $1 cutoff, $2 batch size, per table; each answers one row per deleted row. PostgreSQL skips
# rows another instance's purge is deleting rather than waiting for them.
PURGE_POSTGRES = {
    "webhook_attempts": """
DELETE FROM webhook_attempts WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM webhook_attempts WHERE started_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED))
RETURNING 1
""",
    "webhook_deliveries": """
DELETE FROM webhook_deliveries WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM webhook_deliveries WHERE created_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED))
RETURNING 1
""",
    # The lowest numbers are the oldest events: read the batch of them, delete those past
    # the cutoff (no index on the time: writes would maintain one for this alone). A batch
    # that finds fewer than it read past the cutoff ends the purge.
    "events": """
DELETE FROM events WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM (
        SELECT ctid, created_at FROM events WHERE seq IS NOT NULL ORDER BY seq LIMIT $2
        FOR UPDATE SKIP LOCKED
    ) oldest WHERE created_at < $1))
RETURNING 1
""",
}
PURGE_SQLITE = {
    "webhook_attempts": """
DELETE FROM webhook_attempts WHERE rowid IN (
    SELECT rowid FROM webhook_attempts WHERE started_at < $1 LIMIT $2)
RETURNING 1
""",
    "webhook_deliveries": """
DELETE FROM webhook_deliveries WHERE rowid IN (
    SELECT rowid FROM webhook_deliveries WHERE created_at < $1 LIMIT $2)
RETURNING 1
""",
    "events": """
DELETE FROM events WHERE rowid IN (
    SELECT rowid FROM (
        SELECT rowid, created_at FROM events WHERE seq IS NOT NULL ORDER BY seq LIMIT $2
    ) WHERE created_at < $1)
RETURNING 1
""",
}


async def purge(db: Database, cutoff: int) -> dict[str, int]:
    """Delete every event made before `cutoff` (microseconds since the epoch), the deliveries
    made before it and the attempts started before it; how many of each."""
    statements = PURGE_POSTGRES if db.dialect == "postgresql" else PURGE_SQLITE
    gone: dict[str, int] = {}
    for table, sql in statements.items():
        total = 0
        while True:
            async with db.single_statement_write() as conn:
                deleted = len(await conn.fetch(sql, cutoff, BATCH))
            total += deleted
            if deleted < BATCH:
                break
            await asyncio.sleep(0)  # let requests in between batches
        gone[table] = total
    return gone
