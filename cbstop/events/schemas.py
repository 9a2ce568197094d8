"""An event as the API and webhooks show it (CONTRACT 3.4): one representation for both."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

import orjson
from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

from cbstop.db.database import Row
from cbstop.integrations.schemas import IntegrationOut

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


# --- models for the OpenAPI document (answers are built by `represent`, not by these) -------


def _no_default(schema: dict[str, Any]) -> None:
    """A member that is absent, not null, when it does not apply: no `default` in the schema."""
    schema.pop("default", None)


class PreviousAttributes(BaseModel):
    """The values an update changed, as they were before it."""

    name: str | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_no_default)
    status: Literal["ENABLED", "DISABLED"] | SkipJsonSchema[None] = Field(
        default=None, json_schema_extra=_no_default
    )


class EventData(BaseModel):
    """The integration after the change and, on an update, what it changed."""

    object: IntegrationOut = Field(description="The integration after the change.")
    previous_attributes: PreviousAttributes | SkipJsonSchema[None] = Field(
        default=None,
        description="Only on `integration.updated`: the changed fields' values before it.",
        json_schema_extra=_no_default,
    )


class EventRequest(BaseModel):
    """The request that made the change."""

    id: str = Field(description="Its `X-Request-Id`.")
    idempotency_key: str | None = Field(description="Its `Idempotency-Key`, or null.")


class EventActor(BaseModel):
    """Who made the change: an organisation's key, or a partner group's."""

    type: Literal["organisation", "partner"]


class EventOut(BaseModel):
    """An event (CONTRACT 3.4), as the API and webhook deliveries show it."""

    id: str = Field(description="`evt_` and 128 random bits, URL-safe.")
    type: Literal["integration.created", "integration.updated"]
    created_at: str = Field(
        description="When the change was made: RFC 3339, UTC, microseconds "
        "(`2026-12-03T10:15:05.123456Z`).",
        json_schema_extra={"format": "date-time"},
    )
    organisation_id: str
    integration_id: str
    data: EventData
    request: EventRequest
    actor: EventActor


class EventPage(BaseModel):
    """A page of events, newest first."""

    items: list[EventOut]
    has_more: bool = Field(description="Whether older events follow (see the `Link` header).")
