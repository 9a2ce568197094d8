"""An event as the API and webhooks show it (CONTRACT 3.4): one representation for both."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from cbstop.db.database import Row

# The columns an Event is built from, in this order wherever a statement selects one.
COLUMNS = (
    "e.id, e.type, e.created_at, e.organisation_id, e.integration_id, e.data, e.request_id, "
    "e.idempotency_key, e.actor_type"
)


class Event(NamedTuple):
    """One stored event; `data` is its `data` member as JSON text."""

    id: str
    type: str
    created_at: int  # microseconds since the epoch, UTC
    organisation_id: str
    integration_id: str
    data: str
    request_id: str
    idempotency_key: str | None
    actor_type: str

    @classmethod
    def of(cls, row: Row, offset: int = 0) -> Event:
        """The event in row[offset : offset + 9] (COLUMNS)."""
        return cls._make(row[offset : offset + 9])


def rfc3339(micros: int) -> str:
    """`2026-12-03T10:15:05.123456Z`: UTC, always six fractional digits."""
    moment = datetime.fromtimestamp(micros // 1_000_000, UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{micros % 1_000_000:06d}Z"


def represent(event: Event) -> dict[str, Any]:
    """The exact representation of CONTRACT 3.4 (`data` passed through as stored)."""
    return {
        "id": event.id,
        "type": event.type,
        "created_at": rfc3339(event.created_at),
        "organisation_id": event.organisation_id,
        "integration_id": event.integration_id,
        "data": orjson.Fragment(event.data),
        "request": {"id": event.request_id, "idempotency_key": event.idempotency_key},
        "actor": {"type": event.actor_type},
    }


def encode(event: Event) -> bytes:
    """The event as JSON bytes: a webhook delivery's body, and GET /v1/events/{id}'s."""
    return orjson.dumps(represent(event))
