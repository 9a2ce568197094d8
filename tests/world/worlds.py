"""A small world to load, changed per test: two partners, groups, organisations and keys."""

from __future__ import annotations

from typing import Any

ORG_KEY_SECRET = "cbs_test_world_org_a_000000000"
ADMIN_KEY_SECRET = "cbs_test_world_admin_a_0000000"
DESK_KEY_SECRET = "cbs_test_world_desk_a_00000000"
READ_KEY_SECRET = "cbs_test_world_read_a_00000000"
REVOKED_KEY_SECRET = "cbs_test_world_revoked_a_00000"
SECRETS = (ORG_KEY_SECRET, ADMIN_KEY_SECRET, DESK_KEY_SECRET, READ_KEY_SECRET, REVOKED_KEY_SECRET)


def base_world() -> dict[str, Any]:
    """A fresh copy of the base world: partners A and B, a direct organisation, five keys."""
    return {
        "partners": [
            {"id": "ptr_a", "name": "Partner A"},
            {"id": "ptr_b", "name": "Partner B"},
        ],
        "partner_groups": [
            {"id": "pgrp_a_admin", "partner_id": "ptr_a", "name": "A admins", "is_admin": True},
            {
                "id": "pgrp_a_desk",
                "partner_id": "ptr_a",
                "name": "A desk",
                "is_admin": False,
                "organisation_ids": ["org_a1"],
            },
        ],
        "organisations": [
            {"id": "org_a1", "name": "A one", "partner_id": "ptr_a"},
            {"id": "org_a2", "name": "A two", "partner_id": "ptr_a"},
            {"id": "org_b1", "name": "B one", "partner_id": "ptr_b"},
            {"id": "org_direct", "name": "Direct", "partner_id": None},
        ],
        "merchants": [
            {"id": "mrch_a1_1", "organisation_id": "org_a1", "name": "A1 first"},
            {"id": "mrch_a1_2", "organisation_id": "org_a1", "name": "A1 second"},
            {"id": "mrch_a2_1", "organisation_id": "org_a2", "name": "A2 first"},
            {"id": "mrch_b1_1", "organisation_id": "org_b1", "name": "B1 first"},
            {"id": "mrch_d_1", "organisation_id": "org_direct", "name": "Direct first"},
        ],
        "integrations": [
            integration("int_a1_orders", "org_a1", ["mrch_a1_2", "mrch_a1_1"]),
            integration("int_a1_stripe", "org_a1", ["mrch_a1_1"], type_="STRIPE"),
            integration("int_a2_orders", "org_a2", ["mrch_a2_1"], status="DISABLED"),
            integration("int_b1_orders", "org_b1", ["mrch_b1_1"]),
            integration("int_d_orders", "org_direct", ["mrch_d_1"]),
        ],
        "api_keys": [
            {"id": "key_org_a1", "secret": ORG_KEY_SECRET, "organisation_id": "org_a1"},
            {"id": "key_admin_a", "secret": ADMIN_KEY_SECRET, "partner_group_id": "pgrp_a_admin"},
            {"id": "key_desk_a", "secret": DESK_KEY_SECRET, "partner_group_id": "pgrp_a_desk"},
            {
                "id": "key_read_a1",
                "secret": READ_KEY_SECRET,
                "organisation_id": "org_a1",
                "abilities": ["integrations:read"],
            },
            {
                "id": "key_revoked_a1",
                "secret": REVOKED_KEY_SECRET,
                "organisation_id": "org_a1",
                "revoked": True,
            },
        ],
    }


def integration(
    integration_id: str,
    organisation_id: str,
    merchant_ids: list[str],
    *,
    type_: str = "CUSTOM_ORDERS",
    status: str = "ENABLED",
) -> dict[str, Any]:
    """An integration entry."""
    return {
        "id": integration_id,
        "organisation_id": organisation_id,
        "name": f"Integration {integration_id}",
        "type": type_,
        "status": status,
        "merchant_ids": merchant_ids,
    }
