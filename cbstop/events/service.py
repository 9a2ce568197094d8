"""The rules of reading events: scope, the cursor, ids that cannot exist.

Never sees a request; takes a principal and parsed parameters, raises `cbstop.errors`.
"""

from __future__ import annotations

from cbstop.auth.service import Principal
from cbstop.db.database import Database
from cbstop.errors import NotFound, ValidationFailed
from cbstop.events import repository
from cbstop.events.repository import Page
from cbstop.events.schemas import Event
from cbstop.integrations.service import storable

# The one answer to a cursor that is not an event the key can see, whatever the reason
# (another tenant's, unknown, not numbered yet, malformed): the same words either way.
UNKNOWN_CURSOR = "Not an event this key can see"


async def get_event(db: Database, principal: Principal, event_id: str) -> Event:
    """One numbered event in the key's scope, or `NotFound`."""
    if not storable(event_id):
        raise NotFound()
    async with db.connection() as conn:
        found = await repository.get(conn, scope=principal.scope, event_id=event_id)
    if found is None:
        raise NotFound()
    return found


async def list_events(
    db: Database,
    principal: Principal,
    *,
    limit: int,
    starting_after: str | None,
    type_: str | None,
    integration_id: str | None,
) -> Page:
    """One page of the key's events newest first; `ValidationFailed` on `starting_after` if
    it is not a numbered event in the key's scope."""
    if starting_after is not None and not storable(starting_after):
        raise ValidationFailed([("starting_after", UNKNOWN_CURSOR)])
    if integration_id is not None and not storable(integration_id):
        # No integration has such an id: its events are none (after the cursor's check).
        integration_id = ""
    async with db.connection() as conn:
        page = await repository.page(
            conn,
            scope=principal.scope,
            limit=limit,
            starting_after=starting_after,
            type_=type_,
            integration_id=integration_id,
        )
    if not page.cursor_found:
        raise ValidationFailed([("starting_after", UNKNOWN_CURSOR)])
    return page
