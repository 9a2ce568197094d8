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
)
from cbstop.integrations import repository
from cbstop.integrations.repository import CreateOutcome, Integration, NewIntegration
from cbstop.integrations.rules import ID_MAX_LENGTH as MAX_ID_LENGTH
from cbstop.integrations.rules import is_storable
from cbstop.integrations.schemas import CUSTOM_ORDERS, IntegrationCreate, IntegrationUpdate

# Ids longer than this, or holding NUL, cannot exist: they are answered 404 without a query.


def new_integration_id() -> str:
    """`int_` and 128 bits of randomness, URL-safe."""
    return "int_" + secrets.token_urlsafe(16)


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
    db: Database, principal: Principal, body: IntegrationCreate
) -> Integration:
    """Create a CUSTOM_ORDERS integration, all or nothing."""
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
        created_at=now_micros(),
    )
    if not all(storable(m) for m in body.merchant_ids):
        # Such a merchant cannot exist; the organisation decides between 404 and 422.
        async with db.connection() as conn:
            found = await repository.organisation_in_scope(
                conn, scope=principal.scope, organisation_id=body.organisation_id
            )
        raise InvalidMerchantIds() if found else NotFound()
    async with db.single_statement_write() as conn:
        outcome = await repository.create(conn, scope=principal.scope, new=new)
    if outcome is CreateOutcome.NO_ORGANISATION:
        raise NotFound()
    if outcome is CreateOutcome.INVALID_MERCHANTS:
        raise InvalidMerchantIds()
    return Integration(
        new.id, new.organisation_id, new.name, new.type, new.status, list(new.merchant_ids)
    )


async def update_integration(
    db: Database, principal: Principal, integration_id: str, body: IntegrationUpdate
) -> Integration:
    """Rename and/or disable a CUSTOM_ORDERS integration; each field atomically."""
    if body.name is None and body.status is None:
        raise MissingUpdateFields()
    if not storable(integration_id):
        raise NotFound()
    async with db.single_statement_write() as conn:
        found_type, updated = await repository.update(
            conn,
            scope=principal.scope,
            integration_id=integration_id,
            name=body.name,
            status=body.status,
            updatable_type=CUSTOM_ORDERS,
        )
    if found_type is None:
        raise NotFound()
    if updated is None:
        raise InvalidIntegrationType()
    return updated
