"""Events storage: runs the statements of `sql_postgres` or `sql_sqlite`, returns events.

Every statement filters by the caller's scope and reads only numbered events, so an event
outside the scope, or not yet numbered, is to the caller exactly one that does not exist.
Each call is one statement.
"""

from __future__ import annotations

from typing import NamedTuple

from cbstop.db.database import Connection
from cbstop.db.scope import Scope
from cbstop.events import sql_postgres as pg
from cbstop.events import sql_sqlite as lite
from cbstop.events.schemas import Event


class Page(NamedTuple):
    """A page of events newest first, and whether older ones follow; `cursor_found` is false
    when `starting_after` named no numbered event in the scope (the page is then empty)."""

    cursor_found: bool
    events: list[Event]
    has_more: bool


async def get(conn: Connection, *, scope: Scope, event_id: str) -> Event | None:
    """The event, if it is numbered and inside the scope."""
    sql = (pg if conn.dialect == "postgresql" else lite).GET[scope.kind]
    row = await conn.fetchrow(sql, event_id, scope.id)
    return None if row is None else Event.of(row)


async def page(
    conn: Connection,
    *,
    scope: Scope,
    limit: int,
    starting_after: str | None,
    type_: str | None,
    integration_id: str | None,
) -> Page:
    """Up to `limit` events older than `starting_after` (all, without it), newest first,
    of one type and one integration if given."""
    sql = pg if conn.dialect == "postgresql" else lite
    args: tuple[object, ...] = (scope.id, limit + 1, starting_after, type_)
    if integration_id is None:
        rows = await conn.fetch(sql.PAGE[scope.kind], *args)
    else:
        rows = await conn.fetch(sql.INTEGRATION_PAGE[scope.kind], *args, integration_id)
    # One row at least: the cursor's flag, with NULL event columns if the page is empty.
    found = bool(rows[0][0])
    events = [Event.of(r, 1) for r in rows if r[1] is not None]
    return Page(found, events[:limit], len(events) > limit)
