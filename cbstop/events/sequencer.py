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

The fan-out runs in the same unit of work, under the same lock: the events numbered after
`event_log.fanned_out` get one `webhook_deliveries` row per enabled endpoint whose owner can
see the event (by the endpoint owner's scope now, as an API key of that owner would) and whose
event types include it; then `fanned_out` moves up. It is never skipped and never done twice.
"""

from __future__ import annotations

from typing import NamedTuple

from cbstop.db.database import Connection, Database

# Events numbered, and fanned out, per unit of work.
BATCH = 1000

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

# $1 the last number given, $2 the last number fanned out.
ADVANCE = "UPDATE event_log SET last_seq = $1, fanned_out = $2 WHERE id = 1"

# $1 after this number, $2 up to this one, $3 now: a delivery per event and endpoint that
# should get it. An organisation's endpoint sees its organisation's events; an admin group's,
# its partner's; another group's, its assigned organisations' (CONTRACT 1.4).
FAN_OUT = """
INSERT INTO webhook_deliveries (endpoint_id, event_id, created_at, state, attempts, next_attempt_at)
SELECT w.id, e.id, $3, 'pending', 0, $3
FROM events e
JOIN webhook_endpoints w
  ON w.status = 'enabled'
 AND (w.event_types = '' OR ' ' || w.event_types || ' ' LIKE '% ' || e.type || ' %')
 AND (w.organisation_id = e.organisation_id
      OR EXISTS (SELECT 1 FROM partner_groups g
                 WHERE g.id = w.partner_group_id AND g.is_admin AND g.partner_id = e.partner_id)
      OR EXISTS (SELECT 1 FROM partner_group_organisations a
                 WHERE a.partner_group_id = w.partner_group_id
                   AND a.organisation_id = e.organisation_id))
WHERE e.seq > $1 AND e.seq <= $2
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


async def step(conn: Connection, now: int) -> Progress:
    """Number up to `BATCH` committed events and fan out up to `BATCH` numbered ones, inside
    one write unit of work (the caller's)."""
    postgres = conn.dialect == "postgresql"
    row = await conn.fetchrow(LOCK_POSTGRES if postgres else LOCK_SQLITE)
    if row is None:
        return Progress(0, 0, 0, contended=True)
    last, fanned = int(row[0]), int(row[1])
    numbered = 0
    if postgres:
        ids = [r[0] for r in await conn.fetch(PENDING, BATCH)]
        if ids:
            await conn.execute(NUMBER, ids, list(range(last + 1, last + 1 + len(ids))))
            numbered = len(ids)
            last += numbered
    upto = min(last, fanned + BATCH)
    deliveries = 0
    if upto > fanned:
        deliveries = len(await conn.fetch(FAN_OUT, fanned, upto, now))
    if numbered or upto > fanned:
        await conn.execute(ADVANCE, last, upto)
    return Progress(numbered, upto - fanned, deliveries)


async def sequence(db: Database, now: int) -> Progress:
    """Number every committed event and fan out every numbered one, a batch per unit of
    work; what was done in all."""
    numbered = fanned = deliveries = 0
    async with db.connection() as conn:
        if not await conn.fetchval(WORK):
            return Progress(0, 0, 0)
    while True:
        async with db.transaction(write=True) as conn:
            done = await step(conn, now)
        numbered += done.numbered
        fanned += done.fanned_out
        deliveries += done.deliveries
        if done.contended or (done.numbered < BATCH and done.fanned_out < BATCH):
            return Progress(numbered, fanned, deliveries, done.contended)
