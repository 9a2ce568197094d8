"""The demo world: it loads, and each key sees what `cbstop serve --demo` says it sees."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from cbstop.auth.keys import hash_key
from cbstop.auth.repository import find_key
from cbstop.auth.service import principal_of
from cbstop.db.database import open_database
from cbstop.demo import WORLD, demo_keys, prepare_demo
from tests.support import TEST_KEY_SECRET, api_client, bearer, make_settings, query

ORG_KEY = "cbs_demo_org_xyz456_key"
ADMIN_KEY = "cbs_demo_partner_admin_key"
DESK_KEY = "cbs_demo_partner_eu_desk_key"


def demo_world() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(WORLD.read_text(encoding="utf-8"))
    return loaded


async def _scope(database_url: str, secret: str) -> tuple[str, str, str]:
    db = await open_database(database_url, make_settings(database_url))
    try:
        async with db.transaction() as conn:
            record = await find_key(conn, hash_key(TEST_KEY_SECRET, secret))
    finally:
        await db.close()
    assert record is not None and not record.revoked
    principal = principal_of(record)
    return principal.key_id, principal.scope_kind, principal.scope_id


def test_demo_is_a_fresh_sqlite_database_with_the_demo_world(tmp_path: Path) -> None:
    demo = prepare_demo(TEST_KEY_SECRET, tmp_path)
    assert demo.database_url == f"sqlite:///{tmp_path / 'demo.db'}"
    assert demo.directory == tmp_path
    assert query(demo.database_url, "SELECT id FROM integrations ORDER BY id") == [
        ("int_abc123",),
        ("int_def789",),
        ("int_ghi345",),
    ]
    assert [k.secret for k in demo.keys] == [ORG_KEY, ADMIN_KEY, DESK_KEY]
    assert all(k.secret.startswith("cbs_demo_") for k in demo.keys)


def test_demo_keys_resolve_to_their_owners(tmp_path: Path) -> None:
    demo = prepare_demo(TEST_KEY_SECRET, tmp_path)
    scopes = [asyncio.run(_scope(demo.database_url, k.secret)) for k in demo.keys]
    assert scopes == [
        ("key_demo_org", "organisation", "org_xyz456"),
        ("key_demo_admin", "partner", "ptr_acme"),
        ("key_demo_eu_desk", "group", "pgrp_acme_eu"),
    ]


def test_every_demo_key_has_a_description() -> None:
    assert [k.id for k in demo_keys()] == ["key_demo_org", "key_demo_admin", "key_demo_eu_desk"]
    assert all(k.sees for k in demo_keys())


def _listed(client: Any, secret: str) -> tuple[list[str], int]:
    response = client.get("/v1/integrations?limit=20&offset=0", headers=bearer(secret))
    assert response.status_code == 200, response.text
    body = response.json()
    return [item["id"] for item in body["items"]], body["count"]


@pytest.mark.parametrize(
    ("secret", "ids"),
    [
        # Both keys see both integrations of org_xyz456 (Example 1; docs/decisions.md).
        (ORG_KEY, ["int_abc123", "int_def789"]),
        (DESK_KEY, ["int_abc123", "int_def789"]),
        (ADMIN_KEY, ["int_abc123", "int_def789", "int_ghi345"]),
    ],
    ids=["organisation", "non-admin-group", "admin-group"],
)
def test_demo_keys_see_what_the_banner_says(database_url: str, secret: str, ids: list[str]) -> None:
    with api_client(database_url, demo_world()) as client:
        assert _listed(client, secret) == (ids, len(ids))


def test_the_eu_desk_key_lists_exactly_example_1(database_url: str) -> None:
    with api_client(database_url, demo_world()) as client:
        response = client.get("/v1/integrations/?limit=20&offset=0", headers=bearer(DESK_KEY))
    assert response.status_code == 200
    assert response.json() == {
        "items": [
            {
                "id": "int_abc123",
                "organisation_id": "org_xyz456",
                "name": "Orders API Integration",
                "type": "CUSTOM_ORDERS",
                "status": "ENABLED",
                "merchant_ids": ["mrch_111", "mrch_222"],
                "links": [{"rel": "self", "uri": "/v1/integrations/int_abc123"}],
            },
            {
                "id": "int_def789",
                "organisation_id": "org_xyz456",
                "name": "Stripe Main",
                "type": "STRIPE",
                "status": "ENABLED",
                "merchant_ids": ["mrch_111"],
                "links": [{"rel": "self", "uri": "/v1/integrations/int_def789"}],
            },
        ],
        "count": 2,
    }
