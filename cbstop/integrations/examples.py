"""The specification's examples (integrations-api.md, Examples 1-5), for the OpenAPI document."""

from __future__ import annotations

from typing import Any

from cbstop.web.routing import Example


def _integration(
    integration_id: str, name: str, type_: str, status: str, merchant_ids: list[str]
) -> dict[str, Any]:
    return {
        "id": integration_id,
        "organisation_id": "org_xyz456",
        "name": name,
        "type": type_,
        "status": status,
        "merchant_ids": merchant_ids,
        "links": [{"rel": "self", "uri": f"/v1/integrations/{integration_id}"}],
    }


_ORDERS = _integration(
    "int_abc123", "Orders API Integration", "CUSTOM_ORDERS", "ENABLED", ["mrch_111", "mrch_222"]
)
_STRIPE = _integration("int_def789", "Stripe Main", "STRIPE", "ENABLED", ["mrch_111"])

# Examples 1 and 2 send the same request (with a partner and an organisation key).
LIST_PARAMETERS = {
    "limit": Example("Examples 1 and 2", 20),
    "offset": Example("Examples 1 and 2", 0),
}
GET_PARAMETERS = {"integration_id": Example("Example 4", "int_abc123")}
UPDATE_PARAMETERS = {"integration_id": Example("Example 5", "int_abc123")}
LIST_RESPONSES = {
    "partner": Example("Example 1: a partner-level key", {"items": [_ORDERS, _STRIPE], "count": 2}),
    "organisation": Example(
        "Example 2: an organisation-level key", {"items": [_ORDERS], "count": 1}
    ),
}
CREATE_REQUESTS = {
    "create": Example(
        "Example 3",
        {
            "organisation_id": "org_xyz456",
            "name": "Orders API Integration",
            "type": "CUSTOM_ORDERS",
            "status": "DISABLED",
            "merchant_ids": ["mrch_111", "mrch_222"],
        },
    )
}
CREATE_RESPONSES = {"created": Example("Example 3", {**_ORDERS, "status": "DISABLED"})}
GET_RESPONSES = {"found": Example("Example 4", _ORDERS)}
UPDATE_REQUESTS = {"rename": Example("Example 5", {"name": "Orders API Integration - EU"})}
UPDATE_RESPONSES = {
    "renamed": Example(
        "Example 5", {**_ORDERS, "name": "Orders API Integration - EU", "status": "DISABLED"}
    )
}
