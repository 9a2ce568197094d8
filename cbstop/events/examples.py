"""Examples of events for the OpenAPI document: one create, then one rename, of Example 3's
integration (integrations-api.md)."""

from __future__ import annotations

from typing import Any

from cbstop.web.routing import Example

_INTEGRATION: dict[str, Any] = {
    "id": "int_abc123",
    "organisation_id": "org_xyz456",
    "name": "Orders API Integration",
    "type": "CUSTOM_ORDERS",
    "status": "DISABLED",
    "merchant_ids": ["mrch_111", "mrch_222"],
    "links": [{"rel": "self", "uri": "/v1/integrations/int_abc123"}],
}


def _event(event_id: str, type_: str, at: str, data: dict[str, Any], key: str | None) -> Any:
    return {
        "id": event_id,
        "type": type_,
        "created_at": at,
        "organisation_id": "org_xyz456",
        "integration_id": "int_abc123",
        "data": data,
        "request": {"id": f"req_{event_id[4:12]}", "idempotency_key": key},
        "actor": {"type": "partner"},
    }


CREATED = _event(
    "evt_661b8e29f01a2c4e81b07d35f92a6",
    "integration.created",
    "2026-12-03T10:15:05.123456Z",
    {"object": _INTEGRATION},
    "6f1c2f0e-create",
)
UPDATED = _event(
    "evt_661b8e2a1d4c07f3a9c2e5b81d6e4",
    "integration.updated",
    "2026-12-03T10:16:41.004210Z",
    {
        "object": {**_INTEGRATION, "name": "Orders API Integration - EU"},
        "previous_attributes": {"name": "Orders API Integration"},
    },
    None,
)

LIST_PARAMETERS = {
    "limit": Example("Two per page", 2),
    "starting_after": Example("The page after an event", "evt_661b8e2a1d4c07f3a9c2e5b81d6e4"),
    "type": Example("Updates only", "integration.updated"),
    "integration_id": Example("One integration's events", "int_abc123"),
}
GET_PARAMETERS = {"event_id": Example("A rename", "evt_661b8e2a1d4c07f3a9c2e5b81d6e4")}
LIST_RESPONSES = {
    "page": Example(
        "The newest first; older events follow", {"items": [UPDATED], "has_more": True}
    ),
    "last": Example("The last page", {"items": [CREATED], "has_more": False}),
}
GET_RESPONSES = {"updated": Example("A rename", UPDATED)}
