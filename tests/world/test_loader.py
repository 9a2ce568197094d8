"""World files (CONTRACT 2.3): all or nothing, errors that name the entry, idempotent loads."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cbstop.auth.keys import hash_key
from cbstop.world import loader
from cbstop.world.loader import WorldError, load_world, load_world_file
from tests.db.schema import schema_differences
from tests.support import TEST_KEY_SECRET, api_client, bearer, query, snapshot
from tests.world.worlds import DESK_KEY_SECRET as DESK
from tests.world.worlds import SECRETS, base_world, integration

Change = Callable[[dict[str, Any]], None]


def load(database_url: str, world: dict[str, Any]) -> loader.LoadSummary:
    return load_world(database_url, world, key_secret=TEST_KEY_SECRET)


def test_good_world_loads_every_entry(database_url: str) -> None:
    world = base_world()
    summary = load(database_url, world)
    for table in ("partners", "organisations", "merchants", "integrations", "api_keys"):
        assert query(database_url, f"SELECT count(*) FROM {table}") == [(len(world[table]),)]
        assert summary.added[table] == len(world[table])
    assert query(
        database_url,
        "SELECT partner_group_id, organisation_id, partner_id FROM partner_group_organisations",
    ) == [("pgrp_a_desk", "org_a1", "ptr_a")]
    groups = query(database_url, "SELECT id, partner_id, is_admin FROM partner_groups")
    assert sorted((g[0], g[1], bool(g[2])) for g in groups) == [
        ("pgrp_a_admin", "ptr_a", True),
        ("pgrp_a_desk", "ptr_a", False),
    ]


def test_integrations_carry_their_organisations_partner_and_one_load_time(
    database_url: str,
) -> None:
    load(database_url, base_world())
    rows = query(
        database_url,
        "SELECT id, partner_id, type, status, created_at FROM integrations ORDER BY id",
    )
    assert [r[:4] for r in rows] == [
        ("int_a1_orders", "ptr_a", "CUSTOM_ORDERS", "ENABLED"),
        ("int_a1_stripe", "ptr_a", "STRIPE", "ENABLED"),
        ("int_a2_orders", "ptr_a", "CUSTOM_ORDERS", "DISABLED"),
        ("int_b1_orders", "ptr_b", "CUSTOM_ORDERS", "ENABLED"),
        ("int_d_orders", None, "CUSTOM_ORDERS", "ENABLED"),
    ]
    assert len({r[4] for r in rows}) == 1


def test_merchant_order_is_kept(database_url: str) -> None:
    load(database_url, base_world())
    assert query(
        database_url,
        "SELECT position, merchant_id, organisation_id FROM integration_merchants "
        "WHERE integration_id = ? ORDER BY position",
        "int_a1_orders",
    ) == [(0, "mrch_a1_2", "org_a1"), (1, "mrch_a1_1", "org_a1")]


def test_loading_the_same_world_twice_changes_nothing(database_url: str) -> None:
    load(database_url, base_world())
    before = snapshot(database_url)
    summary = load(database_url, base_world())
    assert snapshot(database_url) == before
    assert sum(summary.added.values()) == 0
    assert summary.unchanged["integrations"] == 5


def _count(database_url: str, table: str, column: str) -> dict[str, int]:
    rows = query(database_url, f"SELECT {column}, SUM(n) FROM {table} GROUP BY {column}")
    return {r[0]: int(r[1]) for r in rows}


def _actual(database_url: str, column: str) -> dict[str, int]:
    rows = query(
        database_url,
        f"SELECT {column}, count(*) FROM integrations WHERE {column} IS NOT NULL GROUP BY {column}",
    )
    return {r[0]: int(r[1]) for r in rows}


def test_count_tables_are_exact_after_loads_that_add_to_existing_organisations(
    database_url: str,
) -> None:
    load(database_url, base_world())
    # A second file that only references what the first one created.
    load(
        database_url,
        {
            "integrations": [
                integration("int_a1_more_1", "org_a1", ["mrch_a1_1"]),
                integration("int_a1_more_2", "org_a1", ["mrch_a1_2"]),
                integration("int_b1_more", "org_b1", ["mrch_b1_1"]),
            ]
        },
    )
    orgs = _count(database_url, "organisation_integration_counts", "organisation_id")
    partners = _count(database_url, "partner_integration_counts", "partner_id")
    assert orgs == _actual(database_url, "organisation_id")
    assert orgs == {"org_a1": 4, "org_a2": 1, "org_b1": 2, "org_direct": 1}
    assert partners == _actual(database_url, "partner_id") == {"ptr_a": 5, "ptr_b": 2}


def test_key_secrets_are_stored_only_as_their_hash(database_url: str) -> None:
    world = base_world()
    load(database_url, world)
    rows = query(database_url, "SELECT * FROM api_keys")
    assert len(rows) == len(SECRETS)
    for row in rows:
        for value in row:
            assert not any(secret in str(value) for secret in SECRETS)
    hashes = dict(query(database_url, "SELECT id, key_hash FROM api_keys"))
    for key in world["api_keys"]:
        assert hashes[key["id"]] == hash_key(TEST_KEY_SECRET, key["secret"])


def test_keys_get_both_abilities_unless_told_and_revoked_keys_a_revocation_time(
    database_url: str,
) -> None:
    load(database_url, base_world())
    rows = query(
        database_url, "SELECT id, abilities, revoked, revoked_at IS NOT NULL FROM api_keys"
    )
    got = {r[0]: (r[1], bool(r[2]), bool(r[3])) for r in rows}
    both = "integrations:read integrations:write"
    assert got == {
        "key_org_a1": (both, False, False),
        "key_admin_a": (both, False, False),
        "key_desk_a": (both, False, False),
        "key_read_a1": ("integrations:read", False, False),
        "key_revoked_a1": (both, True, True),
    }


def _set(section: str, index: int, **fields: Any) -> Change:
    def change(world: dict[str, Any]) -> None:
        world[section][index].update(fields)

    return change


def _append(section: str, entry: dict[str, Any]) -> Change:
    def change(world: dict[str, Any]) -> None:
        world[section].append(entry)

    return change


def _unknown_section(world: dict[str, Any]) -> None:
    world["tenants"] = []


BAD_FILES: list[tuple[str, Change, str]] = [
    (
        "dangling organisation",
        _set("merchants", 0, organisation_id="org_nope"),
        "merchants[0] (mrch_a1_1): organisation org_nope does not exist",
    ),
    (
        "dangling partner",
        _set("organisations", 1, partner_id="ptr_nope"),
        "organisations[1] (org_a2): partner ptr_nope does not exist",
    ),
    (
        "dangling merchant",
        _set("integrations", 0, merchant_ids=["mrch_nope"]),
        "integrations[0] (int_a1_orders): merchant mrch_nope does not exist",
    ),
    (
        "dangling partner group",
        _set("api_keys", 1, partner_group_id="pgrp_nope"),
        "api_keys[1] (key_admin_a): partner group pgrp_nope does not exist",
    ),
    (
        "merchant of another organisation",
        _set("integrations", 0, merchant_ids=["mrch_a1_1", "mrch_a2_1"]),
        "integrations[0] (int_a1_orders): merchant mrch_a2_1 "
        "does not belong to organisation org_a1",
    ),
    (
        "cross-partner group assignment",
        _set("partner_groups", 1, organisation_ids=["org_a1", "org_b1"]),
        "partner_groups[1] (pgrp_a_desk): organisation org_b1 belongs to ptr_b, "
        "not to the group's partner ptr_a",
    ),
    (
        "group assigned an organisation without partner",
        _set("partner_groups", 1, organisation_ids=["org_direct"]),
        "partner_groups[1] (pgrp_a_desk): organisation org_direct belongs to no partner, "
        "not to the group's partner ptr_a",
    ),
    (
        "duplicate id with different content",
        _append("organisations", {"id": "org_a1", "name": "Other", "partner_id": "ptr_a"}),
        "organisations[4] (org_a1): duplicate id, already declared at organisations[0] (org_a1)",
    ),
    (
        "duplicate merchant in an integration",
        _set("integrations", 1, merchant_ids=["mrch_a1_1", "mrch_a1_1"]),
        "integrations[1] (int_a1_stripe): merchant_ids contains mrch_a1_1 twice",
    ),
    (
        "bad status",
        _set("integrations", 1, status="PAUSED"),
        "integrations[1] (int_a1_stripe): status: Input should be 'ENABLED' or 'DISABLED'",
    ),
    (
        "name too long",
        _set("integrations", 2, name="x" * 256),
        "integrations[2] (int_a2_orders): name: String should have at most 255 characters",
    ),
    (
        "empty type",
        _set("integrations", 2, type=""),
        "integrations[2] (int_a2_orders): type: String should have at least 1 character",
    ),
    (
        "short secret",
        _set("api_keys", 0, secret="cbs_short"),
        "api_keys[0] (key_org_a1): secret: secret must be at least 20 characters",
    ),
    (
        "unknown ability",
        _set("api_keys", 0, abilities=["integrations:delete"]),
        "api_keys[0] (key_org_a1): abilities.0: "
        "Input should be 'integrations:read' or 'integrations:write'",
    ),
    (
        "key with two owners",
        _set("api_keys", 0, partner_group_id="pgrp_a_admin"),
        "api_keys[0] (key_org_a1): give exactly one of organisation_id and partner_group_id",
    ),
    (
        "one secret for two keys",
        _set("api_keys", 1, secret=SECRETS[0]),
        "api_keys[1] (key_admin_a): secret is already used by api_keys[0] (key_org_a1)",
    ),
    (
        "unknown field",
        _set("integrations", 0, stauts="DISABLED"),
        "integrations[0] (int_a1_orders): stauts: unknown field",
    ),
    (
        "unknown section",
        _unknown_section,
        "tenants: unknown section (expected one of partners, partner_groups, organisations, "
        "merchants, integrations, api_keys, webhook_endpoints)",
    ),
    (
        "wrong type",
        _set("partner_groups", 0, is_admin="yes"),
        "partner_groups[0] (pgrp_a_admin): is_admin: Input should be a valid boolean",
    ),
    (
        "number for a string",
        _set("merchants", 2, name=123),
        "merchants[2] (mrch_a2_1): name: Input should be a valid string",
    ),
]


ID_RULE = (
    "id: must be 1-255 ASCII letters, digits, '-', '.', '_' or '~', and not '.' or '..': "
    "it is served at /v1/integrations/{id}"
)
SECRET_RULE = (
    "secret: must be printable ASCII without spaces or control characters (0x21-0x7E): "
    "no other key can authenticate"
)


def _id_refused(name: str, bad_id: str, shown: str | None = None) -> tuple[str, Change, str]:
    return (
        f"integration id with {name}",
        _set("integrations", 1, id=bad_id),
        f"integrations[1] ({shown or bad_id}): {ID_RULE}",
    )


def _secret_refused(name: str, secret: str) -> tuple[str, Change, str]:
    return (
        f"secret with {name}",
        _set("api_keys", 2, secret=secret),
        f"api_keys[2] (key_desk_a): {SECRET_RULE}",
    )


# What the API could never accept, store on both databases, or serve (issue item 13): the
# loader applies the API's own rules (cbstop/integrations/rules.py, cbstop/auth/keys.py).
API_RULES: list[tuple[str, Change, str]] = [
    _id_refused("a slash", "int/a1"),
    _id_refused("a question mark", "int?a1"),
    _id_refused("a hash", "int#a1"),
    _id_refused("a space", "int a1"),
    _id_refused("a leading space", " int_a1", '" int_a1"'),
    _id_refused("a percent sign", "int%2Fa1"),
    _id_refused("a non-ASCII letter", "int_\u00e9"),
    _id_refused("a NUL", "int_\x00", '"int_\\u0000"'),
    _id_refused("nothing but a dot segment", ".."),
    _id_refused("256 characters", "i" * 256),
    _secret_refused("a non-ASCII letter", DESK + "\u00e9"),
    _secret_refused("a NUL", DESK[:-1] + "\x00"),
    _secret_refused("a leading space", " " + DESK),
    _secret_refused("a trailing space", DESK + " "),
    _secret_refused("a trailing tab", DESK + "\t"),
    _secret_refused("a trailing no-break space", DESK + "\u00a0"),
    _secret_refused("a trailing next-line", DESK + "\u0085"),
    _secret_refused("a space inside", DESK[:10] + " " + DESK[10:]),
    (
        "secret longer than any key",
        _set("api_keys", 2, secret="k" * 513),
        "api_keys[2] (key_desk_a): secret: String should have at most 512 characters",
    ),
    (
        "blank integration name",
        _set("integrations", 0, name=" \t "),
        "integrations[0] (int_a1_orders): name: must not be blank",
    ),
    (
        "integration name with a control character",
        _set("integrations", 0, name="Orders\x1b[31m"),
        "integrations[0] (int_a1_orders): name: must not contain control characters",
    ),
    (
        "organisation name with a NUL",
        _set("organisations", 1, name="A\x00two"),
        "organisations[1] (org_a2): name: must not contain control characters",
    ),
    (
        "blank partner name",
        _set("partners", 1, name="   "),
        "partners[1] (ptr_b): name: must not be blank",
    ),
    (
        "merchant name with a newline",
        _set("merchants", 4, name="Direct\nfirst"),
        "merchants[4] (mrch_d_1): name: must not contain control characters",
    ),
    (
        "group name with DEL",
        _set("partner_groups", 0, name="A admins\x7f"),
        "partner_groups[0] (pgrp_a_admin): name: must not contain control characters",
    ),
    (
        "name with an unpaired surrogate",
        _set("integrations", 0, name="Orders \ud800"),
        "integrations[0] (int_a1_orders): name: "
        "Input should be a valid string, unable to parse raw data as a unicode string",
    ),
    (
        "organisation id with a NUL",
        _set("organisations", 3, id="org_\x00direct"),
        'organisations[3] ("org_\\u0000direct"): id: must not contain NUL',
    ),
    (
        "merchant id with a NUL in an integration",
        _set("integrations", 0, merchant_ids=["mrch_a1_1\x00"]),
        "integrations[0] (int_a1_orders): merchant_ids.0: must not contain NUL",
    ),
    (
        "type with a NUL",
        _set("integrations", 1, type="STRIPE\x00"),
        "integrations[1] (int_a1_stripe): type: must not contain NUL",
    ),
]


@pytest.mark.parametrize(
    ("change", "message"),
    [(c, m) for _, c, m in BAD_FILES + API_RULES],
    ids=[n for n, _, _ in BAD_FILES + API_RULES],
)
def test_a_bad_world_names_the_entry_and_writes_nothing(
    database_url: str, change: Change, message: str
) -> None:
    load(database_url, {"partners": [{"id": "ptr_seed", "name": "Already there"}]})
    before = snapshot(database_url)
    world = base_world()
    change(world)
    with pytest.raises(WorldError) as caught:
        load(database_url, world)
    assert str(caught.value) == message
    assert snapshot(database_url) == before


def test_an_id_already_stored_with_other_content_is_refused(database_url: str) -> None:
    load(database_url, base_world())
    before = snapshot(database_url)
    world = base_world()
    world["integrations"][3]["name"] = "Renamed"
    world["integrations"].append(integration("int_new", "org_a1", ["mrch_a1_1"]))
    with pytest.raises(WorldError) as caught:
        load(database_url, world)
    assert str(caught.value) == (
        "integrations[3] (int_b1_orders): id already exists in the database with a different name"
    )
    assert snapshot(database_url) == before


def test_a_key_secret_already_used_by_a_stored_key_is_refused(database_url: str) -> None:
    load(database_url, base_world())
    before = snapshot(database_url)
    world = {"api_keys": [{"id": "key_copy", "secret": SECRETS[0], "organisation_id": "org_a2"}]}
    with pytest.raises(WorldError) as caught:
        load(database_url, world)
    assert str(caught.value) == "api_keys[0] (key_copy): secret is already used by key key_org_a1"
    assert snapshot(database_url) == before


def test_a_world_file_that_is_not_json_is_refused(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "world.json"
    path.write_text('{"partners": [', encoding="utf-8")
    before = snapshot(database_url)
    with pytest.raises(WorldError, match=r"world\.json is not valid JSON: "):
        load_world_file(database_url, path, key_secret=TEST_KEY_SECRET)
    assert snapshot(database_url) == before


def test_a_world_file_that_is_not_an_object_is_refused(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "world.json"
    path.write_text("[]", encoding="utf-8")
    with pytest.raises(WorldError) as caught:
        load_world_file(database_url, path, key_secret=TEST_KEY_SECRET)
    assert str(caught.value) == (
        "the world file must be a JSON object: Input should be a valid dictionary or instance "
        "of World"
    )


def test_a_missing_world_file_is_refused(database_url: str, tmp_path: Path) -> None:
    with pytest.raises(WorldError) as caught:
        load_world_file(database_url, tmp_path / "nope.json", key_secret=TEST_KEY_SECRET)
    assert str(caught.value) == (
        f"cannot read world file {tmp_path / 'nope.json'}: No such file or directory"
    )


def test_a_world_file_loads_like_its_mapping(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "world.json"
    path.write_text(json.dumps(base_world()), encoding="utf-8")
    load_world_file(database_url, path, key_secret=TEST_KEY_SECRET)
    assert query(database_url, "SELECT count(*) FROM integrations") == [(5,)]


def test_a_large_load_leaves_every_constraint_and_index_in_place(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every load counts as large: foreign keys checked after COPY, indexes built after.
    monkeypatch.setattr(loader, "LARGE", 1)
    load_world(database_url, base_world(), key_secret=TEST_KEY_SECRET, progress=True)
    more = {"integrations": [integration("int_a1_more", "org_a1", ["mrch_a1_1"])]}
    load_world(database_url, more, key_secret=TEST_KEY_SECRET, progress=True)
    assert "Writing integrations" in capsys.readouterr().err
    assert schema_differences(database_url) == []
    assert query(database_url, "SELECT count(*) FROM integration_merchants") == [(7,)]
    assert _count(database_url, "organisation_integration_counts", "organisation_id") == {
        "org_a1": 3,
        "org_a2": 1,
        "org_b1": 1,
        "org_direct": 1,
    }


def _file_with_a_repeat(world_text: str) -> list[tuple[str, str, str]]:
    """(case, file text, message): a key given twice at the top, in an entry, in a section."""
    stripe_name = '"name": "Integration int_a1_stripe"'
    assert world_text.count(stripe_name) == 1
    return [
        (
            "section given twice",
            world_text[:-1] + ', "partners": []}',
            'the world file: the key "partners" is given twice',
        ),
        (
            "field given twice in an entry",
            world_text.replace(stripe_name, '"name": "Other", ' + stripe_name),
            'integrations[1] (int_a1_stripe): the key "name" is given twice',
        ),
        (
            "id given twice in an entry",
            world_text.replace('"id": "org_a2"', '"id": "org_a2", "id": "org_a3"'),
            'organisations[1] (org_a3): the key "id" is given twice',
        ),
    ]


REPEATS = [case for case, _, _ in _file_with_a_repeat(json.dumps(base_world()))]


@pytest.mark.parametrize("case", REPEATS)
def test_a_key_given_twice_in_one_object_is_refused_naming_where(
    database_url: str, tmp_path: Path, case: str
) -> None:
    # Every JSON parser keeps one of the two silently; the file would not mean what it shows.
    load(database_url, {"partners": [{"id": "ptr_seed", "name": "Already there"}]})
    before = snapshot(database_url)
    cases = {
        c: (text, message) for c, text, message in _file_with_a_repeat(json.dumps(base_world()))
    }
    text, message = cases[case]
    path = tmp_path / "world.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(WorldError) as caught:
        load_world_file(database_url, path, key_secret=TEST_KEY_SECRET)
    assert str(caught.value) == message
    assert snapshot(database_url) == before


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_a_world_file_with_a_non_json_number_is_refused(
    database_url: str, tmp_path: Path, constant: str
) -> None:
    path = tmp_path / "world.json"
    path.write_text('{"partners": [{"id": "p", "name": ' + constant + "}]}", encoding="utf-8")
    with pytest.raises(WorldError) as caught:
        load_world_file(database_url, path, key_secret=TEST_KEY_SECRET)
    assert str(caught.value) == f"{path} is not valid JSON: {constant} is not a JSON value"


def test_a_world_file_that_is_not_utf8_is_refused(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "world.json"
    path.write_bytes(b'{"partners": [{"id": "p", "name": "\xe9"}]}')
    with pytest.raises(WorldError) as caught:
        load_world_file(database_url, path, key_secret=TEST_KEY_SECRET)
    assert str(caught.value) == (
        f"{path} is not valid JSON: not UTF-8 (invalid continuation byte at byte 35)"
    )


# Integration ids at the edges of the rule: each loads, and the API serves it at its link.
SERVABLE_IDS = ["int.v2~a-B_9", "I", "-", "~", "...", "x" * 255, "int_" + "Az09-_" * 7]


def test_every_integration_id_the_loader_accepts_is_served_at_its_link(
    database_url: str,
) -> None:
    world = base_world()
    world["integrations"] = [
        {**integration(i, "org_a1", ["mrch_a1_1"]), "name": f"Edge {n}"}
        for n, i in enumerate(SERVABLE_IDS)
    ]
    with api_client(database_url, world) as client:
        for integration_id in SERVABLE_IDS:
            answer = client.get(f"/v1/integrations/{integration_id}", headers=bearer(SECRETS[0]))
            assert answer.status_code == 200, (integration_id, answer.text)
            body = answer.json()
            assert body["id"] == integration_id
            link = body["links"][0]["uri"]
            assert link == f"/v1/integrations/{integration_id}"
            assert client.get(link, headers=bearer(SECRETS[0])).json()["id"] == integration_id
