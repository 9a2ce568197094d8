"""Events numbered in commit order, and each numbered event fanned out to webhook endpoints.

Paging (`GET /v1/events`) and webhook fan-out both follow `events.seq`, so it must grow in
the order events become visible: a number given to an event that commits later than one with
a higher number would let a reader, or the fan-out, pass it by for good.

- On SQLite one writer runs at a time, so the write numbers its own event (`event_log`'s
  `last_seq`, in its transaction): numbers are in commit order by construction.
- On PostgreSQL writers commit concurrently and in any order. A write leaves `seq` NULL and
  `sequence` numbers what has committed, under `event_log`'s row lock: one sequencer at a time
  in the whole cluster of instances, each numbering only events it can see, after every number
  given before it. An event that commits while it runs is numbered by the next run, above
  everything numbered so far. Within one run, events are numbered by their time (taken by
  the database once the write held its rows, so two updates of one integration keep their
  order), then id. Taking that lock in the writes themselves instead would hold it
  through each commit's WAL flush: measured here, 8 connections inserting managed 2,650-2,820
  rows/s with such a lock against 8,860-9,120 without (`docs/decisions.md`).

The fan-out runs after the numbering, in units of work of its own under the same lock (so
numbering, and with it the API's list, never waits on it): the events numbered after
`event_log.fanned_out` get one `webhook_deliveries` row per enabled endpoint whose owner can
see the event (by the endpoint owner's scope now, as an API key of that owner would) and whose
event types include it; then `fanned_out` moves up. It is never skipped and never done twice.
Each of its three ways to see an event is an indexed join (an organisation's endpoints by
organisation, an admin group's by partner, another group's by assignment): written as one
join with OR, PostgreSQL read every endpoint for every event, and with 2,000 endpoints a batch
of 1,000 events outlasted the statement timeout, for ever (found in review).
"""

from __future__ import annotations

from typing import NamedTuple

from cbstop.db.database import Connection, Database

# Events numbered per unit of work, and events fanned out per unit of work.
BATCH = 1000
FAN_OUT_BATCH = 500

# Another process's sequencer holding the lock is doing this work already: skip rather than
# queue behind it (holding a connection), and look again shortly (`Progress.contended`).
LOCK_POSTGRES = "SELECT last_seq, fanned_out FROM event_log WHERE id = 1 FOR UPDATE SKIP LOCKED"
# SQLite: the write transaction already holds the database's one write lock.
LOCK_SQLITE = "SELECT last_seq, fanned_out FROM event_log WHERE id = 1"

# Whether there is anything to do: a read, so an idle process takes no lock (on SQLite, the
# file's write lock) every poll.
WORK = """
SELECT (SELECT last_seq > fanned_out FROM event_log WHERE id = 1)
    OR EXISTS (SELECT 1 FROM events WHERE seq IS NULL)
"""

# $1 batch size: the committed events still without a number, oldest first.
PENDING = "SELECT id FROM events WHERE seq IS NULL ORDER BY created_at, id LIMIT $1"

# $1 event ids, $2 their numbers.
NUMBER = """
UPDATE events e SET seq = n.seq
FROM unnest($1::text[], $2::bigint[]) AS n(id, seq)
WHERE e.id = n.id
"""

# $1 the last number given.
NUMBERED = "UPDATE event_log SET last_seq = $1 WHERE id = 1"
# $1 the last number fanned out.
FANNED_OUT = "UPDATE event_log SET fanned_out = $1 WHERE id = 1"

# $1 after this number, $2 up to this one, $3 now: a delivery per event and endpoint that
# should get it. An organisation's endpoint sees its organisation's events; an admin group's,
# its partner's; another group's, its assigned organisations' (CONTRACT 1.4). The three are
# disjoint (an admin group's assignments are not its scope), so no pair comes twice.
FAN_OUT = """
WITH fresh AS (
    SELECT e.id, e.type, e.organisation_id, e.partner_id FROM events e
    WHERE e.seq > $1 AND e.seq <= $2
), seen AS (
    SELECT w.id AS endpoint_id, e.id AS event_id, e.type, w.event_types
    FROM fresh e JOIN webhook_endpoints w ON w.organisation_id = e.organisation_id
    WHERE w.status = 'enabled'
    UNION ALL
    SELECT w.id, e.id, e.type, w.event_types
    FROM fresh e
    JOIN partner_groups g ON g.partner_id = e.partner_id AND g.is_admin
    JOIN webhook_endpoints w ON w.partner_group_id = g.id
    WHERE w.status = 'enabled'
    UNION ALL
    SELECT w.id, e.id, e.type, w.event_types
    FROM fresh e
    JOIN partner_group_organisations a ON a.organisation_id = e.organisation_id
    JOIN partner_groups g ON g.id = a.partner_group_id AND NOT g.is_admin
    JOIN webhook_endpoints w ON w.partner_group_id = g.id
    WHERE w.status = 'enabled'
)
INSERT INTO webhook_deliveries (endpoint_id, event_id, created_at, state, attempts, next_attempt_at)
SELECT endpoint_id, event_id, $3, 'pending', 0, $3 FROM seen
WHERE event_types = '' OR ' ' || event_types || ' ' LIKE '% ' || type || ' %'
RETURNING endpoint_id
"""


class Progress(NamedTuple):
    """What one unit of work did."""

    numbered: int
    fanned_out: int  # events
    deliveries: int
    # Another sequencer held the lock: this one did nothing, and should look again soon (what
    # the other numbers may have committed before this process's own event did).
    contended: bool = False


async def number(conn: Connection) -> Progress:
    """Number up to `BATCH` committed events, oldest first, inside one write unit of work
    (the caller's). Nothing to do on SQLite, where each write numbers its own."""
    if conn.dialect != "postgresql":
        return Progress(0, 0, 0)
    row = await conn.fetchrow(LOCK_POSTGRES)
    if row is None:
        return Progress(0, 0, 0, contended=True)
    last = int(row[0])
    ids = [r[0] for r in await conn.fetch(PENDING, BATCH)]
    if ids:
        await conn.execute(NUMBER, ids, list(range(last + 1, last + 1 + len(ids))))
        await conn.execute(NUMBERED, last + len(ids))
    return Progress(len(ids), 0, 0)


async def fan_out(conn: Connection, now: int) -> Progress:
    """Fan out up to `FAN_OUT_BATCH` numbered events, inside one write unit of work (the
    caller's)."""
    row = await conn.fetchrow(LOCK_POSTGRES if conn.dialect == "postgresql" else LOCK_SQLITE)
    if row is None:
        return Progress(0, 0, 0, contended=True)
    last, fanned = int(row[0]), int(row[1])
    upto = min(last, fanned + FAN_OUT_BATCH)
    if upto <= fanned:
        return Progress(0, 0, 0)
    deliveries = len(await conn.fetch(FAN_OUT, fanned, upto, now))
    await conn.execute(FANNED_OUT, upto)
    return Progress(0, upto - fanned, deliveries)


async def sequence(db: Database, now: int) -> Progress:
    """Number every committed event, then fan out every numbered one, a batch per unit of
    work; what was done in all."""
    async with db.connection() as conn:
        if not await conn.fetchval(WORK):
            return Progress(0, 0, 0)
    total = Progress(0, 0, 0)
    while True:
        async with db.transaction(write=True) as conn:
            done = await number(conn)
        total = _sum(total, done)
        if done.contended or done.numbered < BATCH:
            break
    while not total.contended:
        async with db.transaction(write=True) as conn:
            done = await fan_out(conn, now)
        total = _sum(total, done)
        if done.fanned_out < FAN_OUT_BATCH:
            break
    return total


def _sum(a: Progress, b: Progress) -> Progress:
    return Progress(
        a.numbered + b.numbered,
        a.fanned_out + b.fanned_out,
        a.deliveries + b.deliveries,
        a.contended or b.contended,
    )
