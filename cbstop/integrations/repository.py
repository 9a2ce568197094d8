"""Integrations storage: runs the statements of `sql_postgres` or `sql_sqlite`, returns rows.

Every statement filters by the caller's scope, so an integration outside it is, to the
caller, exactly one that does not exist. On PostgreSQL each read is one statement, and so
is each batch of writes (`create_many`, `update_many`: one row per write); on SQLite (no
data-modifying CTEs) a write is several statements inside the caller's write transaction
(`create`, `update`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple

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


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """One create, as the repository writes it: the integration in the caller's scope, its
    event (`event_data` its `data`), and the request's key with the answer to store under it."""

    scope: Scope
    new: NewIntegration
    event: EventDraft
    event_data: str
    keyed: Keyed | None = None
    answer: Answer | None = None


CreateResult = tuple[CreateOutcome, Answer | None]


async def create(conn: Connection, request: CreateRequest) -> CreateResult:
    """SQLite: insert the integration if its organisation is in scope and owns every
    merchant, its event, and store the answer under the request's key, as statements inside
    the caller's write transaction; or, if the key already has this request's answer, write
    nothing and return it (`store.stored` raises for another request's, or an expired one).
    PostgreSQL's creates go in batches: `create_many`."""
    new, event, keyed = request.new, request.event, request.keyed
    origin = event.origin
    if keyed is not None:
        replay = await store.recall_for_write(conn, keyed)
        if replay is not None:
            return CreateOutcome.REPLAYED, replay
    scope = request.scope
    org = await conn.fetchrow(lite.ORGANISATION[scope.kind], new.organisation_id, scope.id)
    if org is None:
        return CreateOutcome.NO_ORGANISATION, None
    owned = await conn.fetchval(
        lite.MERCHANTS_OWNED, new.organisation_id, orjson.dumps(new.merchant_ids).decode()
    )
    if owned != len(new.merchant_ids):
        return CreateOutcome.INVALID_MERCHANTS, None
    await _sqlite_insert(conn, new=new, partner_id=org[1], shard=random.randrange(COUNT_SHARDS))
    seq, now = await next_seq_sqlite(conn)
    await conn.execute(
        lite.INSERT_CREATED_EVENT,
        event.id,
        seq,
        now,
        new.id,
        request.event_data,
        origin.request_id,
        origin.idempotency_key,
        origin.actor_type,
    )
    if keyed is not None and request.answer is not None:
        await store.remember(conn, keyed, request.answer)
    return CreateOutcome.CREATED, None


async def create_many(
    conn: Connection, requests: Sequence[CreateRequest], *, shard: int
) -> list[CreateResult | Exception]:
    """PostgreSQL: every create of `requests` (one scope kind) in one statement, each all or
    nothing on its own (`create`'s result for each, or the exception `store.stored` raised
    for its key); the counts go to `shard`."""
    kind = requests[0].scope.kind
    merchant_of: list[int] = []
    positions: list[int] = []
    merchants: list[str] = []
    for n, request in enumerate(requests, start=1):
        for position, merchant in enumerate(request.new.merchant_ids):
            merchant_of.append(n)
            positions.append(position)
            merchants.append(merchant)
    columns: list[list[object]] = [[] for _ in range(17)]
    for request in requests:
        new, origin = request.new, request.event.origin
        values = (
            new.id,
            new.organisation_id,
            new.name,
            new.status,
            new.created_at,
            request.scope.id,
            *_key_args(request.keyed, request.answer),
            request.event.id,
            origin.request_id,
            origin.idempotency_key,
            origin.actor_type,
            request.event_data,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    rows = await conn.fetch(pg.CREATE[kind], *columns, merchant_of, positions, merchants, shard)
    results: list[CreateResult | Exception] = []
    for request, row in zip(requests, rows, strict=True):
        if request.keyed is not None:
            try:
                replay = store.stored(request.keyed, row, 2)
            except Exception as exc:  # another request's answer, or an expired one
                results.append(exc)
                continue
            if replay is not None:
                results.append((CreateOutcome.REPLAYED, replay))
                continue
        results.append((_created(found=row[0], merchants_ok=row[1]), None))
    return results


def _created(*, found: bool, merchants_ok: bool) -> CreateOutcome:
    if not found:
        return CreateOutcome.NO_ORGANISATION
    if not merchants_ok:
        return CreateOutcome.INVALID_MERCHANTS
    return CreateOutcome.CREATED


def _key_args(keyed: Keyed | None, answer: Answer | None) -> tuple[object, ...]:
    """A create's key (owner NULL: none) and the answer to store under it."""
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


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    """One PATCH, as the repository writes it: the integration in the caller's scope, the
    values to set (None: keep), the versions If-Match allows (None: any), its event if a
    value changes, and its key (to find an answer already stored under it)."""

    scope: Scope
    integration_id: str
    name: str | None
    status: str | None
    if_match: frozenset[int] | None
    event: EventDraft
    keyed: Keyed | None = None


async def update(conn: Connection, request: UpdateRequest, *, updatable_type: str) -> UpdateOutcome:
    """SQLite: update an integration in the scope if it is of `updatable_type` and its
    version is one If-Match allows, and record its event if a value changed, as statements
    inside the caller's write transaction. PostgreSQL's PATCHes go in batches:
    `update_many`."""
    scope, integration_id, if_match = request.scope, request.integration_id, request.if_match
    event = request.event
    origin = event.origin
    target = await conn.fetchrow(lite.TARGET[scope.kind], integration_id, scope.id)
    if target is None:
        return UpdateOutcome(None, None, None)
    found_type, version, old_name, old_status = target[0], target[1], target[2], target[3]
    if found_type != updatable_type or (if_match is not None and version not in if_match):
        return UpdateOutcome(found_type, version, None)
    await conn.execute(lite.UPDATE, integration_id, request.name, request.status)
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


async def update_many(
    conn: Connection, requests: Sequence[UpdateRequest], *, updatable_type: str
) -> list[UpdateOutcome | Answer | Exception | None]:
    """PostgreSQL: every PATCH of `requests` (one scope kind, each of another integration) in
    one statement, each all or nothing on its own: its `UpdateOutcome`, or the answer already
    stored under its key (nothing changed), or the exception `store.stored` raised for its
    key; or None for a PATCH whose row a concurrent update changed between the statement's
    read and its lock, which changed nothing and is to run again, after this statement's
    commit, on the row as it is then."""
    kind = requests[0].scope.kind
    rows = await conn.fetch(pg.UPDATE[kind], *_update_args(requests), updatable_type)
    return [
        _updated(request, row, updatable_type) for request, row in zip(requests, rows, strict=True)
    ]


def _update_args(requests: Sequence[UpdateRequest]) -> list[list[Any]]:
    """UPDATE's $1-$13 for `requests`: one array per column, then the allowed versions, flat
    ($14, the updatable type, is the caller's)."""
    columns: list[list[Any]] = [[] for _ in range(11)]
    allowed_of: list[int] = []
    allowed: list[int] = []
    for n, request in enumerate(requests, start=1):
        origin, keyed = request.event.origin, request.keyed
        values = (
            request.integration_id,
            request.name,
            request.status,
            request.scope.id,
            request.if_match is not None,
            request.event.id,
            origin.request_id,
            origin.idempotency_key,
            origin.actor_type,
            None if keyed is None else keyed.owner,
            None if keyed is None else keyed.key,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
        for version in sorted(request.if_match or ()):
            allowed_of.append(n)
            allowed.append(version)
    return [*columns, allowed_of, allowed]


def _updated(
    request: UpdateRequest, row: Row, updatable_type: str
) -> UpdateOutcome | Answer | Exception | None:
    """What UPDATE's row says of one PATCH; None: run it again (its row changed under it)."""
    if request.keyed is not None:
        try:
            replay = store.stored(request.keyed, row, 9)
        except Exception as exc:  # another request's answer, or an expired one
            return exc
        if replay is not None:
            return replay
    found_type, version = row[0], row[1]
    if found_type is None:
        return UpdateOutcome(None, None, None)
    if row[2] is not None:
        return UpdateOutcome(found_type, version, _integration(row, 2))
    if found_type != updatable_type or (
        request.if_match is not None and version not in request.if_match
    ):
        return UpdateOutcome(found_type, version, None)
    return None


async def current_version(conn: Connection, *, integration_id: str) -> int | None:
    """The integration's version now (for the ETag of a 412)."""
    sql = (pg if conn.dialect == "postgresql" else lite).VERSION
    value = await conn.fetchval(sql, integration_id)
    return None if value is None else int(value)
