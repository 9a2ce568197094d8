"""What a change records: the event's identity and origin, handed to the write that makes it.

The integrations service builds an `EventDraft` for each create and PATCH; its repository
writes the event in the same statement (PostgreSQL) or transaction (SQLite) as the change, so
a change and its event are committed together or not at all. A PATCH that changes no value
writes none, and a replayed request never reaches a write.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Literal

from cbstop.db.database import Connection
from cbstop.db.scope import ScopeKind

CREATED = "integration.created"
UPDATED = "integration.updated"
EVENT_TYPES = (CREATED, UPDATED)

ActorType = Literal["organisation", "partner"]

# SQLite: the next number in commit order (one writer at a time), taken inside the write's
# transaction; the event's INSERT then uses it.
NEXT_SEQ_SQLITE = "UPDATE event_log SET last_seq = last_seq + 1 WHERE id = 1 RETURNING last_seq"


def new_event_id() -> str:
    """`evt_`, the time in microseconds (13 hex digits), then 64 random bits (16 hex digits).

    Ids that grow with time go to the right-hand end of the primary key's index, as `seq`
    does: with wholly random ids every write touched a random leaf of an index as large as the
    trail (1M events: every insert a page the last checkpoint had not written yet, so a full
    page image in the WAL). 64 random bits keep them unguessable from one another.
    """
    return f"evt_{time.time_ns() // 1000:013x}{secrets.token_hex(8)}"


def actor_type(kind: ScopeKind) -> ActorType:
    """Who made a change, as events say it: an organisation's key, or a partner group's."""
    return "organisation" if kind == "organisation" else "partner"


@dataclass(frozen=True, slots=True)
class Origin:
    """The request a change came from: its X-Request-Id, its Idempotency-Key (if it sent one)
    and the kind of key that made it."""

    request_id: str
    idempotency_key: str | None
    actor_type: ActorType


@dataclass(frozen=True, slots=True)
class EventDraft:
    """An event a write will record if it changes something: its id and origin.

    Its time is taken by the write itself, once it holds what it changes: on PostgreSQL the
    database's clock in the statement (after the row lock, for an update), on SQLite the
    process's clock inside the write lock. A time taken before the write could put two
    updates of one integration in the wrong order: the later of two racing PATCHes may have
    asked first.
    """

    id: str
    origin: Origin

    @classmethod
    def new(cls, origin: Origin) -> EventDraft:
        return cls(new_event_id(), origin)


async def next_seq_sqlite(conn: Connection) -> tuple[int, int]:
    """The next event number and the time, inside a SQLite write transaction (one writer at
    a time: both grow in commit order)."""
    return int(await conn.fetchval(NEXT_SEQ_SQLITE)), time.time_ns() // 1000
