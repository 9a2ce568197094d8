"""The world checks on their own: a world and a snapshot of stored rows in, a plan or an error out.

No database here: each snapshot is written by hand as what `bulk.fetch_existing` would have
read. The loads through a real database are in test_loader.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest

from cbstop.auth.keys import hash_key, secret_fingerprint
from cbstop.world import checks
from cbstop.world.errors import WorldError
from cbstop.world.rows import ApiKeyRow, Existing, IntegrationRow, Plan
from cbstop.world.schema import World
from tests.support import TEST_KEY_SECRET
from tests.world.worlds import ORG_KEY_SECRET, SECRETS, base_world, integration

NOW = 1_700_000_000_000_000
BOTH = "integrations:read integrations:write"
Change = Callable[[dict[str, Any]], None]


def check(raw: dict[str, Any], existing: Existing | None = None) -> Plan:
    """The plan for the world file `raw` over the stored rows `existing` (none by default)."""
    world = World.model_validate(raw)
    return checks.plan(
        world,
        raw,
        key_hashes=[hash_key(TEST_KEY_SECRET, k.secret) for k in world.api_keys],
        key_fingerprint=secret_fingerprint(TEST_KEY_SECRET),
        now=NOW,
        existing=existing or Existing(),
    )


def refusal(raw: dict[str, Any], existing: Existing | None = None) -> str:
    with pytest.raises(WorldError) as caught:
        check(raw, existing)
    return str(caught.value)


def stored_a1_orders(**over: Any) -> IntegrationRow:
    """base_world's first integration as the database holds it."""
    row: IntegrationRow = {
        "organisation_id": "org_a1",
        "name": "Integration int_a1_orders",
        "type": "CUSTOM_ORDERS",
        "status": "ENABLED",
        "merchant_ids": ["mrch_a1_2", "mrch_a1_1"],
    }
    return cast(IntegrationRow, {**row, **over})


def stored_org_key(**over: Any) -> ApiKeyRow:
    """base_world's organisation key as the database holds it."""
    row: ApiKeyRow = {
        "key_hash": hash_key(TEST_KEY_SECRET, ORG_KEY_SECRET),
        "organisation_id": "org_a1",
        "partner_group_id": None,
        "abilities": BOTH,
        "revoked": False,
    }
    return cast(ApiKeyRow, {**row, **over})


# --- a new world ------------------------------------------------------------------------------


def test_a_new_world_plans_every_entry_in_write_order() -> None:
    plan = check(base_world())
    assert list(plan.rows) == [
        "partners",
        "organisations",
        "partner_groups",
        "partner_group_organisations",
        "merchants",
        "integrations",
        "integration_merchants",
        "api_keys",
        "webhook_endpoints",
    ]
    assert plan.added == {
        "partners": 2,
        "organisations": 4,
        "partner_groups": 2,
        "partner_group_organisations": 1,
        "merchants": 5,
        "integrations": 5,
        "integration_merchants": 6,
        "api_keys": 5,
        "webhook_endpoints": 0,
    }
    assert plan.unchanged == {
        "partners": 0,
        "organisations": 0,
        "partner_groups": 0,
        "merchants": 0,
        "integrations": 0,
        "api_keys": 0,
        "webhook_endpoints": 0,
    }
    assert plan.rows["partner_group_organisations"] == [("pgrp_a_desk", "org_a1", "ptr_a")]


def test_integrations_carry_their_organisations_partner_the_load_time_and_merchant_order() -> None:
    plan = check(base_world())
    assert plan.rows["integrations"][0] == (
        "int_a1_orders",
        "org_a1",
        "ptr_a",
        "Integration int_a1_orders",
        "CUSTOM_ORDERS",
        "ENABLED",
        NOW,
    )
    assert [row[2] for row in plan.rows["integrations"]] == [
        "ptr_a",
        "ptr_a",
        "ptr_a",
        "ptr_b",
        None,
    ]
    assert plan.rows["integration_merchants"][:2] == [
        ("int_a1_orders", 0, "mrch_a1_2", "org_a1"),
        ("int_a1_orders", 1, "mrch_a1_1", "org_a1"),
    ]


def test_counts_add_each_new_integration_to_its_organisation_and_partner() -> None:
    plan = check(base_world())
    assert plan.organisation_counts == {"org_a1": 2, "org_a2": 1, "org_b1": 1, "org_direct": 1}
    assert plan.partner_counts == {"ptr_a": 3, "ptr_b": 1}


def test_keys_are_planned_with_their_hash_abilities_and_revocation_time_never_the_secret() -> None:
    rows = {row[0]: row for row in check(base_world()).rows["api_keys"]}
    assert rows["key_org_a1"] == (
        "key_org_a1",
        hash_key(TEST_KEY_SECRET, ORG_KEY_SECRET),
        "org_a1",
        None,
        BOTH,
        False,
        None,
        NOW,
        secret_fingerprint(TEST_KEY_SECRET),
    )
    assert rows["key_desk_a"][2:4] == (None, "pgrp_a_desk")
    assert rows["key_read_a1"][4] == "integrations:read"
    assert rows["key_revoked_a1"][5:8] == (True, NOW, NOW)
    assert not any(secret in str(row) for row in rows.values() for secret in SECRETS)


def test_references_may_point_forwards_in_the_file() -> None:
    # Every section comes before the sections it refers to.
    world = base_world()
    raw = {section: world[section] for section in reversed(list(world))}
    assert list(raw) == [
        "api_keys",
        "integrations",
        "merchants",
        "organisations",
        "partner_groups",
        "partners",
    ]
    assert check(raw).added == check(base_world()).added


def test_references_to_stored_rows_need_no_entry_in_the_file() -> None:
    raw = {
        "integrations": [integration("int_more", "org_b1", ["mrch_b1_1"])],
        "api_keys": [{"id": "key_more", "secret": "cbs_more_" + "0" * 20, "partner_group_id": "g"}],
    }
    existing = Existing(
        organisations={"org_b1": {"name": "B one", "partner_id": "ptr_b"}},
        merchants={"mrch_b1_1": {"organisation_id": "org_b1", "name": "B1 first"}},
        partner_groups={
            "g": {"partner_id": "ptr_b", "name": "B", "is_admin": True, "organisation_ids": set()}
        },
    )
    plan = check(raw, existing)
    assert plan.rows["integrations"][0][:3] == ("int_more", "org_b1", "ptr_b")
    assert plan.organisation_counts == {"org_b1": 1}
    assert plan.partner_counts == {"ptr_b": 1}
    assert plan.added["api_keys"] == 1


# --- what the database already holds ----------------------------------------------------------


def test_an_entry_stored_with_the_same_content_is_counted_unchanged_and_not_written() -> None:
    existing = Existing(
        partners={"ptr_a": {"name": "Partner A"}},
        organisations={"org_a1": {"name": "A one", "partner_id": "ptr_a"}},
        partner_groups={
            "pgrp_a_desk": {
                "partner_id": "ptr_a",
                "name": "A desk",
                "is_admin": False,
                "organisation_ids": {"org_a1"},
            }
        },
        merchants={"mrch_a1_1": {"organisation_id": "org_a1", "name": "A1 first"}},
        integrations={"int_a1_orders": stored_a1_orders()},
        api_keys={"key_org_a1": stored_org_key()},
        key_owners={hash_key(TEST_KEY_SECRET, ORG_KEY_SECRET): "key_org_a1"},
    )
    plan = check(base_world(), existing)
    assert plan.unchanged == {
        "partners": 1,
        "organisations": 1,
        "partner_groups": 1,
        "merchants": 1,
        "integrations": 1,
        "api_keys": 1,
        "webhook_endpoints": 0,
    }
    assert plan.added["partner_group_organisations"] == 0
    assert plan.added["integration_merchants"] == 4
    written = {row[0] for rows in plan.rows.values() for row in rows}
    assert written.isdisjoint(
        {"ptr_a", "org_a1", "pgrp_a_desk", "mrch_a1_1", "int_a1_orders", "key_org_a1"}
    )
    assert plan.organisation_counts["org_a1"] == 1  # int_a1_stripe only


def test_a_file_of_entries_all_stored_plans_nothing() -> None:
    existing = Existing(partners={"ptr_a": {"name": "Partner A"}, "ptr_b": {"name": "Partner B"}})
    plan = check({"partners": base_world()["partners"]}, existing)
    assert plan.added == dict.fromkeys(plan.rows, 0)
    assert plan.unchanged["partners"] == 2
    assert plan.organisation_counts == plan.partner_counts == {}


STORED_DIFFERENTLY: list[tuple[str, Existing, str]] = [
    (
        "partner name",
        Existing(partners={"ptr_b": {"name": "Partner Bee"}}),
        "partners[1] (ptr_b): id already exists in the database with a different name",
    ),
    (
        "organisation partner",
        Existing(organisations={"org_a2": {"name": "A two", "partner_id": None}}),
        "organisations[1] (org_a2): id already exists in the database with a different partner_id",
    ),
    (
        "group assignments",
        Existing(
            partner_groups={
                "pgrp_a_desk": {
                    "partner_id": "ptr_a",
                    "name": "A desk",
                    "is_admin": False,
                    "organisation_ids": {"org_a1", "org_a2"},
                }
            }
        ),
        "partner_groups[1] (pgrp_a_desk): id already exists in the database with a different "
        "organisation_ids",
    ),
    (
        "integration name and type",
        Existing(integrations={"int_a1_orders": stored_a1_orders(name="Old", type="STRIPE")}),
        "integrations[0] (int_a1_orders): id already exists in the database with a different "
        "name, type",
    ),
    (
        "integration merchant order",
        Existing(
            integrations={
                "int_a1_orders": stored_a1_orders(merchant_ids=["mrch_a1_1", "mrch_a1_2"])
            }
        ),
        "integrations[0] (int_a1_orders): id already exists in the database with a different "
        "merchant_ids",
    ),
    (
        "key abilities",
        Existing(api_keys={"key_org_a1": stored_org_key(abilities="integrations:read")}),
        "api_keys[0] (key_org_a1): id already exists in the database with a different abilities",
    ),
]


@pytest.mark.parametrize(
    ("existing", "message"),
    [(e, m) for _, e, m in STORED_DIFFERENTLY],
    ids=[n for n, _, _ in STORED_DIFFERENTLY],
)
def test_an_id_stored_with_other_content_names_the_entry_and_each_differing_field(
    existing: Existing, message: str
) -> None:
    assert refusal(base_world(), existing) == message


def test_a_group_assigned_a_stored_organisation_of_another_partner_names_the_entry() -> None:
    raw = {
        "partner_groups": [
            {"id": "g", "partner_id": "ptr_a", "name": "G", "is_admin": False},
            {
                "id": "h",
                "partner_id": "ptr_a",
                "name": "H",
                "is_admin": False,
                "organisation_ids": ["org_b1"],
            },
        ]
    }
    existing = Existing(
        partners={"ptr_a": {"name": "Partner A"}},
        organisations={"org_b1": {"name": "B one", "partner_id": "ptr_b"}},
    )
    assert refusal(raw, existing) == (
        "partner_groups[1] (h): organisation org_b1 belongs to ptr_b, "
        "not to the group's partner ptr_a"
    )


def test_a_merchant_stored_under_another_organisation_names_the_integration() -> None:
    raw = {"integrations": [integration("int_x", "org_a1", ["mrch_b1_1"])]}
    existing = Existing(
        organisations={"org_a1": {"name": "A one", "partner_id": "ptr_a"}},
        merchants={"mrch_b1_1": {"organisation_id": "org_b1", "name": "B1 first"}},
    )
    assert refusal(raw, existing) == (
        "integrations[0] (int_x): merchant mrch_b1_1 does not belong to organisation org_a1"
    )


def test_a_key_secret_held_by_a_stored_key_names_that_key() -> None:
    raw = {"api_keys": [{"id": "key_copy", "secret": ORG_KEY_SECRET, "organisation_id": "org_a2"}]}
    existing = Existing(
        organisations={"org_a2": {"name": "A two", "partner_id": "ptr_a"}},
        key_owners={hash_key(TEST_KEY_SECRET, ORG_KEY_SECRET): "key_org_a1"},
    )
    assert (
        refusal(raw, existing) == "api_keys[0] (key_copy): secret is already used by key key_org_a1"
    )


# --- refusals within the file -----------------------------------------------------------------


def _set(section: str, index: int, **fields: Any) -> Change:
    def change(world: dict[str, Any]) -> None:
        world[section][index].update(fields)

    return change


def _append(section: str, entry: dict[str, Any]) -> Change:
    def change(world: dict[str, Any]) -> None:
        world[section].append(entry)

    return change


def _without(section: str, index: int, field: str) -> Change:
    def change(world: dict[str, Any]) -> None:
        del world[section][index][field]

    return change


REFUSED: list[tuple[str, Change, str]] = [
    (
        "duplicate id",
        _append("merchants", {"id": "mrch_a1_2", "organisation_id": "org_a1", "name": "Again"}),
        "merchants[5] (mrch_a1_2): duplicate id, already declared at merchants[1] (mrch_a1_2)",
    ),
    (
        "organisation of a missing partner",
        _set("organisations", 1, partner_id="ptr_nope"),
        "organisations[1] (org_a2): partner ptr_nope does not exist",
    ),
    (
        "group of a missing partner",
        _set("partner_groups", 0, partner_id="ptr_nope"),
        "partner_groups[0] (pgrp_a_admin): partner ptr_nope does not exist",
    ),
    (
        "group assigned a missing organisation",
        _set("partner_groups", 1, organisation_ids=["org_nope"]),
        "partner_groups[1] (pgrp_a_desk): organisation org_nope does not exist",
    ),
    (
        "group assigned an organisation twice",
        _set("partner_groups", 1, organisation_ids=["org_a1", "org_a1"]),
        "partner_groups[1] (pgrp_a_desk): organisation_ids contains org_a1 twice",
    ),
    (
        "merchant of a missing organisation",
        _set("merchants", 0, organisation_id="org_nope"),
        "merchants[0] (mrch_a1_1): organisation org_nope does not exist",
    ),
    (
        "integration of a missing organisation",
        _set("integrations", 4, organisation_id="org_nope"),
        "integrations[4] (int_d_orders): organisation org_nope does not exist",
    ),
    (
        "integration of a missing merchant",
        _set("integrations", 0, merchant_ids=["mrch_nope"]),
        "integrations[0] (int_a1_orders): merchant mrch_nope does not exist",
    ),
    (
        "integration linking a merchant twice",
        _set("integrations", 1, merchant_ids=["mrch_a1_1", "mrch_a1_1"]),
        "integrations[1] (int_a1_stripe): merchant_ids contains mrch_a1_1 twice",
    ),
    (
        "key of a missing organisation",
        _set("api_keys", 3, organisation_id="org_nope"),
        "api_keys[3] (key_read_a1): organisation org_nope does not exist",
    ),
    (
        "key of a missing partner group",
        _set("api_keys", 1, partner_group_id="pgrp_nope"),
        "api_keys[1] (key_admin_a): partner group pgrp_nope does not exist",
    ),
    (
        "key with two owners",
        _set("api_keys", 0, partner_group_id="pgrp_a_admin"),
        "api_keys[0] (key_org_a1): give exactly one of organisation_id and partner_group_id",
    ),
    (
        "key without an owner",
        _without("api_keys", 2, "partner_group_id"),
        "api_keys[2] (key_desk_a): give exactly one of organisation_id and partner_group_id",
    ),
    (
        "one secret for two keys",
        _set("api_keys", 4, secret=SECRETS[1]),
        "api_keys[4] (key_revoked_a1): secret is already used by api_keys[1] (key_admin_a)",
    ),
]


@pytest.mark.parametrize(
    ("change", "message"), [(c, m) for _, c, m in REFUSED], ids=[n for n, _, _ in REFUSED]
)
def test_a_refused_entry_is_named_with_its_place_id_and_reason(
    change: Change, message: str
) -> None:
    world = base_world()
    change(world)
    assert refusal(world) == message


def test_group_assigned_another_partners_organisation_names_the_entry() -> None:
    world = base_world()
    world["partner_groups"][1]["organisation_ids"] = ["org_a1", "org_b1"]
    assert refusal(world) == (
        "partner_groups[1] (pgrp_a_desk): organisation org_b1 belongs to ptr_b, "
        "not to the group's partner ptr_a"
    )


def test_group_assigned_an_organisation_without_partner_names_the_entry() -> None:
    world = base_world()
    world["partner_groups"][1]["organisation_ids"] = ["org_direct"]
    assert refusal(world) == (
        "partner_groups[1] (pgrp_a_desk): organisation org_direct belongs to no partner, "
        "not to the group's partner ptr_a"
    )


def test_a_merchant_of_another_organisation_in_the_file_names_the_integration() -> None:
    world = base_world()
    world["integrations"][0]["merchant_ids"] = ["mrch_a1_1", "mrch_a2_1"]
    assert refusal(world) == (
        "integrations[0] (int_a1_orders): merchant mrch_a2_1 does not belong to organisation org_a1"
    )


def test_the_first_refusal_in_section_order_is_the_one_reported() -> None:
    # Sections are checked partners, organisations, groups, merchants, integrations, keys;
    # within a section, entry by entry; within an entry, as the messages are listed above.
    world = base_world()
    world["api_keys"][0]["organisation_id"] = "org_nope"
    world["integrations"][2]["merchant_ids"] = ["mrch_nope"]
    world["integrations"][1]["organisation_id"] = "org_nope"
    assert refusal(world) == "integrations[1] (int_a1_stripe): organisation org_nope does not exist"
    world["merchants"][3]["organisation_id"] = "org_nope"
    assert refusal(world) == "merchants[3] (mrch_b1_1): organisation org_nope does not exist"
    # A stored row with other content is found after the section's references are checked.
    existing = Existing(merchants={"mrch_a1_1": {"organisation_id": "org_a1", "name": "Old"}})
    assert (
        refusal(world, existing) == "merchants[3] (mrch_b1_1): organisation org_nope does not exist"
    )
    world["merchants"][3]["organisation_id"] = "org_b1"
    assert refusal(world, existing) == (
        "merchants[0] (mrch_a1_1): id already exists in the database with a different name"
    )


# --- which ids the database is asked about ----------------------------------------------------


def test_lookups_name_each_sections_ids_then_the_references_the_file_does_not_declare() -> None:
    raw = base_world()
    raw["integrations"].append(integration("int_more", "org_stored", ["mrch_stored", "mrch_a1_1"]))
    raw["api_keys"][1]["partner_group_id"] = "pgrp_stored"
    raw["organisations"][3]["partner_id"] = "ptr_stored"
    world = World.model_validate(raw)
    ids = checks.lookups(world, ["h1", "h2"])
    assert ids.partners == ["ptr_a", "ptr_b", "ptr_stored"]
    assert ids.organisations == ["org_a1", "org_a2", "org_b1", "org_direct", "org_stored"]
    assert ids.partner_groups == ["pgrp_a_admin", "pgrp_a_desk", "pgrp_stored"]
    assert ids.merchants == [m["id"] for m in raw["merchants"]] + ["mrch_stored"]
    assert ids.integrations == [i["id"] for i in raw["integrations"]]
    assert ids.api_keys == [k["id"] for k in raw["api_keys"]]
    assert ids.key_hashes == ["h1", "h2"]
    assert ids.webhook_endpoints == []
