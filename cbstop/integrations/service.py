"""The rules of integrations: scope, validation beyond the schema, create and update.

Never sees a request; takes a principal and validated input, raises `cbstop.errors`.
"""

from __future__ import annotations

import secrets
import time

from cbstop.auth.service import Principal
from cbstop.db.database import Database
from cbstop.errors import (
    DuplicateMerchantIds,
    InvalidIntegrationType,
    InvalidMerchantIds,
    MissingUpdateFields,
    NotFound,
    PreconditionFailed,
)
from cbstop.events.record import EventDraft, Origin
from cbstop.idempotency import store
from cbstop.idempotency.keys import Answer, Keyed
from cbstop.integrations import batching, repository
from cbstop.integrations.repository import (
    CreateOutcome,
    CreateRequest,
    CreateResult,
    Integration,
    NewIntegration,
    UpdateRequest,
)
from cbstop.integrations.rules import ID_MAX_LENGTH as MAX_ID_LENGTH
from cbstop.integrations.rules import is_storable
from cbstop.integrations.schemas import (
    CUSTOM_ORDERS,
    IntegrationCreate,
    IntegrationUpdate,
    etag,
    written,
)

FIRST_VERSION = 1  # a new integration's version (the column's default)

# Ids longer than this, or holding NUL, cannot exist: they are answered 404 without a query.


def new_integration_id() -> str:
    """`int_`, the time in milliseconds (12 hex digits), then 96 random bits (16 URL-safe
    base64 characters).

    Ids that grow with time append to the right-hand end of every index that holds them (the
    primary key, `(id, organisation_id)`, the merchant rows' keys): with wholly random ids
    each create dirtied a random leaf of each, and on a large world most of those were pages
    the last checkpoint had not written yet, each a full page image in the WAL
    (docs/performance.md). Hex sorts the same in every collation; the 96 random bits keep ids
    unguessable from one another (CONTRACT: at least 96).
    """
    return f"int_{time.time_ns() // 1_000_000:012x}{secrets.token_urlsafe(12)}"


def storable(value: str) -> bool:
    """Whether a string could be a stored id (the databases refuse NUL and lone surrogates)."""
    return len(value) <= MAX_ID_LENGTH and is_storable(value)


def now_micros() -> int:
    """Creation times: microseconds since the epoch, UTC."""
    return time.time_ns() // 1000


async def get_integration(db: Database, principal: Principal, integration_id: str) -> Integration:
    """One integration in the key's scope, or `NotFound`."""
    if not storable(integration_id):
        raise NotFound()
    async with db.connection() as conn:
        found = await repository.get(conn, scope=principal.scope, integration_id=integration_id)
    if found is None:
        raise NotFound()
    return found


async def list_integrations(
    db: Database, principal: Principal, *, limit: int, offset: int
) -> tuple[int, list[Integration]]:
    """(total in scope, one page newest first)."""
    async with db.connection() as conn:
        return await repository.list_page(conn, scope=principal.scope, limit=limit, offset=offset)


async def create_integration(
    db: Database,
    principal: Principal,
    body: IntegrationCreate,
    origin: Origin,
    keyed: Keyed | None = None,
) -> tuple[Answer, bool]:
    """Create a CUSTOM_ORDERS integration and its `integration.created` event, all or
    nothing: (its answer, False); or, if the request's Idempotency-Key already holds this
    request's answer, (that answer, True)."""
    if len(set(body.merchant_ids)) != len(body.merchant_ids):
        raise DuplicateMerchantIds()
    if not storable(body.organisation_id):
        raise NotFound()
    new = NewIntegration(
        id=new_integration_id(),
        organisation_id=body.organisation_id,
        name=body.name,
        type=CUSTOM_ORDERS,
        status=body.status,
        merchant_ids=body.merchant_ids,
        created_at=keyed.now if keyed is not None else now_micros(),
    )
    if not all(storable(m) for m in body.merchant_ids):
        # Such a merchant cannot exist; the organisation decides between 404 and 422.
        async with db.connection() as conn:
            found = await repository.organisation_in_scope(
                conn, scope=principal.scope, organisation_id=body.organisation_id
            )
        raise InvalidMerchantIds() if found else NotFound()
    answer = written(
        201,
        Integration(
            new.id,
            new.organisation_id,
            new.name,
            new.type,
            new.status,
            list(new.merchant_ids),
            FIRST_VERSION,
        ),
        stored_at=None if keyed is None else keyed.now,
    )

    request = CreateRequest(
        scope=principal.scope,
        new=new,
        event=EventDraft.new(origin),
        # The event's `data`: the integration as the answer represents it.
        event_data=(b'{"object":%b}' % answer.body).decode(),
        keyed=keyed,
        answer=answer,
    )

    async def write(lock_wait: float | None) -> CreateResult:
        if db.dialect == "postgresql":
            # With the process's other creates of the moment: one statement, one commit.
            return await batching.create(db, request)
        async with db.single_statement_write(lock_wait=lock_wait) as conn:
            return await repository.create(conn, request)

    outcome, replay = await store.run_keyed(db, keyed, write)
    if replay is not None:
        return replay, True
    if outcome is CreateOutcome.NO_ORGANISATION:
        raise NotFound()
    if outcome is CreateOutcome.INVALID_MERCHANTS:
        raise InvalidMerchantIds()
    return answer, False


async def update_integration(
    db: Database,
    principal: Principal,
    integration_id: str,
    body: IntegrationUpdate,
    origin: Origin,
    *,
    if_match: frozenset[int] | None = None,
    keyed: Keyed | None = None,
) -> tuple[Answer, bool]:
    """Rename and/or disable a CUSTOM_ORDERS integration, each field atomically, if its
    version is one `if_match` allows (None: any), with an `integration.updated` event if a
    value changed: (its answer, False); or the answer already stored under the request's
    Idempotency-Key, (that answer, True).

    On PostgreSQL it goes with the process's other PATCHes of the moment
    (`batching.update`): one statement, and with a key a transaction that also stores the
    answer (a PATCH's answer is known only once the row is updated). On SQLite, a write
    transaction of its own.
    """
    if body.name is None and body.status is None:
        raise MissingUpdateFields()
    if not storable(integration_id):
        raise NotFound()
    request = UpdateRequest(
        scope=principal.scope,
        integration_id=integration_id,
        name=body.name,
        status=body.status,
        if_match=if_match,
        event=EventDraft.new(origin),
        keyed=keyed,
    )

    async def write(lock_wait: float | None) -> batching.PatchResult:
        if db.dialect == "postgresql":
            return await batching.update(db, request)
        async with db.transaction(write=True, lock_wait=lock_wait) as conn:
            if keyed is not None:
                replay = await store.recall_for_write(conn, keyed)
                if replay is not None:
                    return None, replay
            outcome = await repository.update(conn, request, updatable_type=CUSTOM_ORDERS)
            answer = batching.stored_answer(keyed, outcome)
            if keyed is not None and answer is not None:
                await store.remember(conn, keyed, answer)
            return outcome, answer

    outcome, stored = await store.run_keyed(db, keyed, write)
    if outcome is None:
        assert stored is not None
        return stored, True
    if outcome.type is None:
        raise NotFound()
    if outcome.updated is None:
        # 412 comes before the type (CONTRACT 3.2). The version read may already be stale (a
        # concurrent PATCH): the 412 gives the one there is now.
        if if_match is not None and (
            outcome.version not in if_match or outcome.type == CUSTOM_ORDERS
        ):
            async with db.connection() as conn:
                now = await repository.current_version(conn, integration_id=integration_id)
            raise PreconditionFailed(etag(now if now is not None else outcome.version or 0))
        raise InvalidIntegrationType()
    return (stored if stored is not None else written(200, outcome.updated)), False
