"""Integrations storage: runs the statements of `sql_postgres` or `sql_sqlite`, returns rows.

Every statement filters by the caller's scope, so an integration outside it is, to the
caller, exactly one that does not exist. On PostgreSQL each read and write is one
statement; on SQLite (no data-modifying CTEs) a write is several statements inside the
caller's write transaction.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

import orjson

from cbstop.db.database import Connection, Row
from cbstop.db.scope import Scope
from cbstop.db.tables import COUNT_SHARDS
from cbstop.events.record import EventDraft, next_seq_sqlite
from cbstop.idempotency import store
from cbstop.idempotency.keys import Answer, Keyed
from cbstop.integrations import sql_postgres as pg
from cbstop.integrations import sql_sqlite as lite


class Integration(NamedTuple):
    """One integration with its merchants in their order.

    A named tuple: built straight from a result row's slice, several times cheaper than a
    dataclass when a page has a hundred of them.
    """

    id: str
    organisation_id: str
    name: str
    type: str
    status: str
    merchant_ids: list[str]
    # Changes whenever a value changes: the ETag (CONTRACT 3.2). Not part of the JSON.
    version: int


@dataclass(frozen=True, slots=True)
class NewIntegration:
    """What a create writes."""

    id: str
    organisation_id: str
    name: str
    type: str
    status: str
    merchant_ids: list[str]
    created_at: int


class CreateOutcome(Enum):
    CREATED = "created"
    NO_ORGANISATION = "no_organisation"
    INVALID_MERCHANTS = "invalid_merchants"
    REPLAYED = "replayed"  # the Idempotency-Key already had this request's answer


class UpdateOutcome(NamedTuple):
    """What an update found and did."""

    type: str | None  # None: no such integration in the scope
    version: int | None  # its version as the update read it
    updated: Integration | None  # None: unchanged (another type, or If-Match did not allow)


def _integration(row: Row, offset: int = 0) -> Integration:
    """The integration in row[offset : offset + 7] (merchants, then the version)."""
    values = row[offset : offset + 7]
    merchants = values[5]
    if isinstance(merchants, str):  # SQLite's json_group_array
        return Integration._make((*values[:5], orjson.loads(merchants), values[6]))
    return Integration._make(values)


async def get(conn: Connection, *, scope: Scope, integration_id: str) -> Integration | None:
    """The integration, if it exists inside the scope."""
    sql = (pg if conn.dialect == "postgresql" else lite).GET[scope.kind]
    row = await conn.fetchrow(sql, integration_id, scope.id)
    return None if row is None else _integration(row)


async def list_page(
    conn: Connection, *, scope: Scope, limit: int, offset: int
) -> tuple[int, list[Integration]]:
    """(count in scope, the page newest first)."""
    sql = (pg if conn.dialect == "postgresql" else lite).LIST[scope.kind]
    rows = await conn.fetch(sql, scope.id, limit, offset)
    count = int(rows[0][0]) if rows else 0
    return count, [_integration(r, 1) for r in rows if r[1] is not None]


async def organisation_in_scope(conn: Connection, *, scope: Scope, organisation_id: str) -> bool:
    """Whether the organisation exists inside the scope."""
    sql = (pg if conn.dialect == "postgresql" else lite).ORGANISATION[scope.kind]
    return await conn.fetchrow(sql, organisation_id, scope.id) is not None


async def create(
    conn: Connection,
    *,
    scope: Scope,
    new: NewIntegration,
    event: EventDraft,
    event_data: str,
    keyed: Keyed | None = None,
    answer: Answer | None = None,
) -> tuple[CreateOutcome, Answer | None]:
    """Insert the integration if its organisation is in scope and owns every merchant, its
    event (`event_data` its `data`), and store `answer` under the request's key, all in one
    unit of work; or, if the key already has this request's answer, write nothing and return
    it (`store.stored` raises for another request's, or an expired one)."""
    shard = random.randrange(COUNT_SHARDS)
    origin = event.origin
    if conn.dialect == "postgresql":
        row = await conn.fetchrow(
            pg.CREATE[scope.kind],
            new.id,
            new.organisation_id,
            new.name,
            new.status,
            new.created_at,
            new.merchant_ids,
            shard,
            scope.id,
            *_key_args(keyed, answer),
            event.id,
            origin.request_id,
            origin.idempotency_key,
            origin.actor_type,
            event_data,
        )
        assert row is not None
        if keyed is not None:
            replay = store.stored(keyed, row, 2)
            if replay is not None:
                return CreateOutcome.REPLAYED, replay
        found, merchants_ok = row[0], row[1]
    else:
        if keyed is not None:
            replay = await store.recall_for_write(conn, keyed)
            if replay is not None:
                return CreateOutcome.REPLAYED, replay
        org = await conn.fetchrow(lite.ORGANISATION[scope.kind], new.organisation_id, scope.id)
        found, merchants_ok = org is not None, False
        if org is not None:
            owned = await conn.fetchval(
                lite.MERCHANTS_OWNED, new.organisation_id, orjson.dumps(new.merchant_ids).decode()
            )
            merchants_ok = owned == len(new.merchant_ids)
            if merchants_ok:
                await _sqlite_insert(conn, new=new, partner_id=org[1], shard=shard)
                seq, now = await next_seq_sqlite(conn)
                await conn.execute(
                    lite.INSERT_CREATED_EVENT,
                    event.id,
                    seq,
                    now,
                    new.id,
                    event_data,
                    origin.request_id,
                    origin.idempotency_key,
                    origin.actor_type,
                )
                if keyed is not None and answer is not None:
                    await store.remember(conn, keyed, answer)
    if not found:
        return CreateOutcome.NO_ORGANISATION, None
    if not merchants_ok:
        return CreateOutcome.INVALID_MERCHANTS, None
    return CreateOutcome.CREATED, None


def _key_args(keyed: Keyed | None, answer: Answer | None) -> tuple[object, ...]:
    """CREATE's $9-$14: the key (owner NULL: none) and the answer to store under it."""
    if keyed is None or answer is None:
        return (None, None, None, None, None, None)
    return (
        keyed.owner,
        keyed.key,
        keyed.fingerprint,
        answer.body,
        answer.location,
        answer.etag,
    )


async def _sqlite_insert(
    conn: Connection, *, new: NewIntegration, partner_id: str | None, shard: int
) -> None:
    await conn.execute(
        lite.INSERT_INTEGRATION,
        new.id,
        new.organisation_id,
        partner_id,
        new.name,
        new.type,
        new.status,
        new.created_at,
    )
    await conn.executemany(
        lite.INSERT_MERCHANT,
        [(new.id, i, m, new.organisation_id) for i, m in enumerate(new.merchant_ids)],
    )
    await conn.execute(lite.ADD_TO_ORGANISATION_COUNT, new.organisation_id, shard)
    if partner_id is not None:
        await conn.execute(lite.ADD_TO_PARTNER_COUNT, partner_id, shard)


async def update(
    conn: Connection,
    *,
    scope: Scope,
    integration_id: str,
    name: str | None,
    status: str | None,
    updatable_type: str,
    if_match: frozenset[int] | None,
    event: EventDraft,
) -> UpdateOutcome:
    """Update an integration in the scope if it is of `updatable_type` and its version is
    one `if_match` allows (None: any), and record `event` if a value changed."""
    origin = event.origin
    if conn.dialect == "postgresql":
        allowed = None if if_match is None else sorted(if_match)
        while True:
            row = await conn.fetchrow(
                pg.UPDATE[scope.kind],
                integration_id,
                name,
                status,
                scope.id,
                updatable_type,
                allowed,
                event.id,
                origin.request_id,
                origin.idempotency_key,
                origin.actor_type,
            )
            if row is None:
                return UpdateOutcome(None, None, None)
            found_type, version = row[0], row[1]
            if row[2] is not None:
                return UpdateOutcome(found_type, version, _integration(row, 2))
            if found_type != updatable_type or (if_match is not None and version not in if_match):
                return UpdateOutcome(found_type, version, None)
            # A concurrent update moved the version on between the read and the write, which
            # then changed nothing: run it again on the row as it is now.
    target = await conn.fetchrow(lite.TARGET[scope.kind], integration_id, scope.id)
    if target is None:
        return UpdateOutcome(None, None, None)
    found_type, version, old_name, old_status = target[0], target[1], target[2], target[3]
    if found_type != updatable_type or (if_match is not None and version not in if_match):
        return UpdateOutcome(found_type, version, None)
    await conn.execute(lite.UPDATE, integration_id, name, status)
    updated = await get(conn, scope=scope, integration_id=integration_id)
    if updated is not None and updated.version != version:
        previous = {
            key: was
            for key, was, now in (
                ("name", old_name, updated.name),
                ("status", old_status, updated.status),
            )
            if was != now
        }
        seq, now = await next_seq_sqlite(conn)
        await conn.execute(
            lite.INSERT_UPDATED_EVENT,
            event.id,
            seq,
            now,
            integration_id,
            orjson.dumps(previous).decode(),
            origin.request_id,
            origin.idempotency_key,
            origin.actor_type,
        )
    return UpdateOutcome(found_type, version, updated)


async def current_version(conn: Connection, *, integration_id: str) -> int | None:
    """The integration's version now (for the ETag of a 412)."""
    sql = (pg if conn.dialect == "postgresql" else lite).VERSION
    value = await conn.fetchval(sql, integration_id)
    return None if value is None else int(value)
