"""The database itself refuses states the service must never reach, whatever code writes."""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg
import pytest

from cbstop.world.loader import load_world
from tests.support import TEST_KEY_SECRET, snapshot
from tests.world.worlds import base_world

HASH = "a" * 64
NOW = 1_700_000_000_000_000


def write(database_url: str, sql: str, *params: Any) -> None:
    """Run one write with `?` parameters on either database, committing it."""
    if database_url.startswith("sqlite:///"):
        conn = sqlite3.connect(database_url[len("sqlite:///") :])
        conn.execute("PRAGMA foreign_keys=ON")
        try:
            with conn:
                conn.execute(sql, params)
        finally:
            conn.close()
        return
    with psycopg.connect(database_url) as pg:
        pg.execute(sql.replace("?", "%s"), params)


@pytest.fixture
def world_url(database_url: str) -> str:
    """A database holding the base world (partners A and B)."""
    load_world(database_url, base_world(), key_secret=TEST_KEY_SECRET)
    return database_url


def assert_refused(database_url: str, sql: str, *params: Any) -> None:
    before = snapshot(database_url)
    with pytest.raises((sqlite3.IntegrityError, psycopg.errors.IntegrityError)):
        write(database_url, sql, *params)
    assert snapshot(database_url) == before


KEY = (
    "INSERT INTO api_keys (id, key_hash, organisation_id, partner_group_id, abilities, "
    "revoked, revoked_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
INTEGRATION = (
    "INSERT INTO integrations (id, organisation_id, partner_id, name, type, status, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def test_a_key_with_two_owners_is_refused(world_url: str) -> None:
    assert_refused(
        world_url,
        KEY,
        "key_x",
        HASH,
        "org_a1",
        "pgrp_a_admin",
        "integrations:read",
        False,
        None,
        NOW,
    )


def test_a_key_without_owner_is_refused(world_url: str) -> None:
    assert_refused(world_url, KEY, "key_x", HASH, None, None, "integrations:read", False, None, NOW)


def test_a_revoked_key_without_revocation_time_is_refused(world_url: str) -> None:
    assert_refused(
        world_url, KEY, "key_x", HASH, "org_a1", None, "integrations:read", True, None, NOW
    )


def test_a_key_hash_that_is_not_64_characters_is_refused(world_url: str) -> None:
    assert_refused(
        world_url, KEY, "key_x", "abc", "org_a1", None, "integrations:read", False, None, NOW
    )


def test_a_group_assigned_another_partners_organisation_is_refused(world_url: str) -> None:
    sql = (
        "INSERT INTO partner_group_organisations (partner_group_id, organisation_id, partner_id) "
        "VALUES (?, ?, ?)"
    )
    # Claiming either partner for the row breaks one of the two composite keys.
    assert_refused(world_url, sql, "pgrp_a_desk", "org_b1", "ptr_a")
    assert_refused(world_url, sql, "pgrp_a_desk", "org_b1", "ptr_b")


def test_an_integration_merchant_of_another_organisation_is_refused(world_url: str) -> None:
    sql = (
        "INSERT INTO integration_merchants (integration_id, position, merchant_id, "
        "organisation_id) VALUES (?, ?, ?, ?)"
    )
    assert_refused(world_url, sql, "int_a1_orders", 2, "mrch_a2_1", "org_a1")
    assert_refused(world_url, sql, "int_a1_orders", 2, "mrch_a2_1", "org_a2")


def test_an_integration_with_a_bad_status_is_refused(world_url: str) -> None:
    assert_refused(
        world_url, INTEGRATION, "int_x", "org_a1", "ptr_a", "N", "CUSTOM_ORDERS", "PAUSED", NOW
    )


def test_an_integration_with_a_wrong_partner_copy_is_refused(world_url: str) -> None:
    assert_refused(
        world_url, INTEGRATION, "int_x", "org_a1", "ptr_b", "N", "CUSTOM_ORDERS", "ENABLED", NOW
    )


def test_an_integration_with_an_empty_or_long_name_is_refused(world_url: str) -> None:
    for name in ("", "x" * 256):
        assert_refused(
            world_url,
            INTEGRATION,
            "int_x",
            "org_a1",
            "ptr_a",
            name,
            "CUSTOM_ORDERS",
            "ENABLED",
            NOW,
        )


def test_an_integration_of_an_unknown_organisation_is_refused(world_url: str) -> None:
    assert_refused(world_url, INTEGRATION, "int_x", "org_nope", None, "N", "STRIPE", "ENABLED", NOW)


def test_a_negative_count_is_refused(world_url: str) -> None:
    assert_refused(
        world_url,
        "INSERT INTO organisation_integration_counts (organisation_id, shard, n) VALUES (?, ?, ?)",
        "org_a2",
        3,
        -1,
    )
