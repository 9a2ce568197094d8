"""The world file's `webhook_endpoints`: valid endpoints load with the rest in one transaction;
each bad shape or reference is refused, naming the entry, and nothing is written."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, get_args

import pytest

from cbstop.events.record import EVENT_TYPES
from cbstop.world.loader import WorldError, load_world, load_world_file
from cbstop.world.schema import EventType, WebhookEndpoint
from tests.support import TEST_KEY_SECRET, execute_many, query, snapshot
from tests.test_readme import DOCS, world_file_examples
from tests.world.worlds import base_world

SECRET_A = "whsec_" + base64.b64encode(bytes(range(32))).decode()
SECRET_B = "whsec_" + base64.b64encode(bytes(range(100, 124))).decode()  # 24 bytes: allowed

Change = Callable[[dict[str, Any]], None]


def webhook_world() -> dict[str, Any]:
    """The base world with an organisation's endpoint (every type) and a group's (one type)."""
    world = base_world()
    world["webhook_endpoints"] = [
        {
            "id": "we_org_a1",
            "organisation_id": "org_a1",
            "url": "https://receiver.example/a1",
            "secret": SECRET_A,
        },
        {
            "id": "we_admin_a",
            "partner_group_id": "pgrp_a_admin",
            "url": "http://127.0.0.1:9000/hooks?team=a",
            "secret": SECRET_B,
            "event_types": ["integration.updated", "integration.created"],
        },
    ]
    return world


def load(database_url: str, world: dict[str, Any]) -> Any:
    return load_world(database_url, world, key_secret=TEST_KEY_SECRET)


def stored(database_url: str) -> list[tuple[Any, ...]]:
    return query(
        database_url,
        "SELECT id, organisation_id, partner_group_id, url, secret, event_types, status, "
        "disabled_reason FROM webhook_endpoints ORDER BY id",
    )


def test_the_schemas_event_types_are_the_recorded_ones() -> None:
    assert get_args(EventType) == EVENT_TYPES


def test_valid_endpoints_load_enabled_with_their_secret_and_sorted_event_types(
    database_url: str,
) -> None:
    summary = load(database_url, webhook_world())
    assert summary.added["webhook_endpoints"] == 2
    assert stored(database_url) == [
        (
            "we_admin_a",
            None,
            "pgrp_a_admin",
            "http://127.0.0.1:9000/hooks?team=a",
            SECRET_B,
            "integration.created integration.updated",
            "enabled",
            None,
        ),
        ("we_org_a1", "org_a1", None, "https://receiver.example/a1", SECRET_A, "", "enabled", None),
    ]
    [(created_at,)] = query(database_url, "SELECT DISTINCT created_at FROM webhook_endpoints")
    assert created_at > 0


def test_a_world_load_records_no_events_and_makes_no_deliveries(database_url: str) -> None:
    load(database_url, webhook_world())
    for table in ("events", "webhook_deliveries", "webhook_attempts"):
        assert query(database_url, f"SELECT count(*) FROM {table}") == [(0,)], table


def test_endpoints_may_belong_to_owners_already_stored(database_url: str) -> None:
    load(database_url, base_world())
    world = {"webhook_endpoints": webhook_world()["webhook_endpoints"]}
    assert load(database_url, world).added["webhook_endpoints"] == 2
    assert [r[0] for r in stored(database_url)] == ["we_admin_a", "we_org_a1"]


def test_loading_the_same_endpoints_twice_changes_nothing(database_url: str) -> None:
    load(database_url, webhook_world())
    before = snapshot(database_url)
    again = load(database_url, webhook_world())
    assert again.added["webhook_endpoints"] == 0
    assert again.unchanged["webhook_endpoints"] == 2
    assert snapshot(database_url) == before


def test_an_endpoint_the_deliverer_disabled_is_still_the_same_entry(database_url: str) -> None:
    # A 410 disables an endpoint (CONTRACT 3.5); the file that declared it is not in conflict.
    load(database_url, webhook_world())
    execute_many(
        database_url,
        "UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = ? WHERE id = ?",
        [("the receiver answered 410 Gone", "we_org_a1")],
    )
    before = snapshot(database_url)
    assert load(database_url, webhook_world()).unchanged["webhook_endpoints"] == 2
    assert snapshot(database_url) == before


@pytest.mark.parametrize(
    ("field", "value", "differs"),
    [
        ("url", "https://receiver.example/other", "url"),
        ("secret", "whsec_" + base64.b64encode(bytes(32)).decode(), "secret"),
        ("event_types", ["integration.created"], "event_types"),
        ("organisation_id", "org_a2", "organisation_id"),
    ],
)
def test_an_id_stored_with_other_values_is_refused_and_nothing_written(
    database_url: str, field: str, value: Any, differs: str
) -> None:
    load(database_url, webhook_world())
    before = snapshot(database_url)
    world = webhook_world()
    world["webhook_endpoints"][0][field] = value
    world["partners"].append({"id": "ptr_new", "name": "New"})
    with pytest.raises(WorldError) as caught:
        load(database_url, world)
    assert str(caught.value) == (
        f"webhook_endpoints[0] (we_org_a1): id already exists in the database with a different "
        f"{differs}"
    )
    assert snapshot(database_url) == before


def _set(index: int, **values: Any) -> Change:
    def change(world: dict[str, Any]) -> None:
        world["webhook_endpoints"][index].update(values)

    return change


def _without(index: int, field: str) -> Change:
    def change(world: dict[str, Any]) -> None:
        del world["webhook_endpoints"][index][field]

    return change


def _append(entry: dict[str, Any]) -> Change:
    def change(world: dict[str, Any]) -> None:
        world["webhook_endpoints"].append(entry)

    return change


ORG = "webhook_endpoints[0] (we_org_a1)"
GROUP = "webhook_endpoints[1] (we_admin_a)"
BAD: list[tuple[str, Change, str]] = [
    ("no url", _without(0, "url"), f"{ORG}: url: Field required"),
    ("no secret", _without(0, "secret"), f"{ORG}: secret: Field required"),
    ("no id", _without(0, "id"), "webhook_endpoints[0]: id: Field required"),
    ("unknown field", _set(0, status="enabled"), f"{ORG}: status: unknown field"),
    (
        "url not http",
        _set(0, url="ftp://receiver.example/"),
        f"{ORG}: url: 'ftp://receiver.example/' is not an http:// or https:// URL with a host",
    ),
    (
        "url without host",
        _set(0, url="https://"),
        f"{ORG}: url: 'https://' is not an http:// or https:// URL with a host",
    ),
    (
        "url with a space",
        _set(0, url="https://receiver.example/a b"),
        f"{ORG}: url: the URL must not contain spaces or control characters",
    ),
    ("url not a string", _set(0, url=42), f"{ORG}: url: Input should be a valid string"),
    (
        "secret without prefix",
        _set(0, secret=SECRET_A.removeprefix("whsec_")),
        f"{ORG}: secret: a webhook secret starts with 'whsec_'",
    ),
    (
        "secret not base64",
        _set(0, secret="whsec_not*base64"),
        f"{ORG}: secret: a webhook secret is 'whsec_' and then base64",
    ),
    (
        "secret too short",
        _set(0, secret="whsec_" + base64.b64encode(bytes(16)).decode()),
        f"{ORG}: secret: a webhook secret's key is 24 to 64 bytes, not 16",
    ),
    (
        "unknown event type",
        _set(1, event_types=["integration.deleted"]),
        f"{GROUP}: event_types.0: Input should be 'integration.created' or 'integration.updated'",
    ),
    (
        "event type twice",
        _set(1, event_types=["integration.created", "integration.created"]),
        f"{GROUP}: event_types: contains integration.created twice",
    ),
    (
        "no event types",
        _set(1, event_types=[]),
        f"{GROUP}: event_types: must not be empty: leave it out to send every type",
    ),
    (
        "two owners",
        _set(0, partner_group_id="pgrp_a_admin"),
        f"{ORG}: give exactly one of organisation_id and partner_group_id",
    ),
    (
        "no owner",
        _without(1, "partner_group_id"),
        f"{GROUP}: give exactly one of organisation_id and partner_group_id",
    ),
    (
        "unknown organisation",
        _set(0, organisation_id="org_nope"),
        f"{ORG}: organisation org_nope does not exist",
    ),
    (
        "unknown group",
        _set(1, partner_group_id="pgrp_nope"),
        f"{GROUP}: partner group pgrp_nope does not exist",
    ),
    (
        "duplicate id",
        _append(
            {
                "id": "we_org_a1",
                "organisation_id": "org_a2",
                "url": "https://x.example/",
                "secret": SECRET_A,
            }
        ),
        "webhook_endpoints[2] (we_org_a1): duplicate id, already declared at "
        "webhook_endpoints[0] (we_org_a1)",
    ),
]


@pytest.mark.parametrize(
    ("change", "message"), [(c, m) for _, c, m in BAD], ids=[n for n, _, _ in BAD]
)
def test_a_bad_endpoint_names_the_entry_and_writes_nothing(
    database_url: str, change: Change, message: str
) -> None:
    load(database_url, {"partners": [{"id": "ptr_seed", "name": "Already there"}]})
    before = snapshot(database_url)
    world = webhook_world()
    change(world)
    with pytest.raises(WorldError) as caught:
        load(database_url, world)
    assert str(caught.value) == message
    assert snapshot(database_url) == before


def test_webhook_endpoints_must_be_a_list(database_url: str) -> None:
    before = snapshot(database_url)
    with pytest.raises(WorldError) as caught:
        load(database_url, {"webhook_endpoints": {"id": "we_1"}})
    assert str(caught.value) == "webhook_endpoints: Input should be a valid list"
    assert snapshot(database_url) == before


def test_the_world_file_references_webhook_example_loads_after_the_example_file(
    database_url: str,
) -> None:
    # The third example of docs/world-files.md (tests/test_readme.py loads the first two).
    _, _, webhooks = world_file_examples()
    load_world_file(database_url, DOCS / "examples" / "world.json", key_secret=TEST_KEY_SECRET)
    assert load(database_url, webhooks).added["webhook_endpoints"] == 2
    assert [r[:3] + r[5:] for r in stored(database_url)] == [
        ("we_acme_all", None, "pgrp_acme_admins", "", "enabled", None),
        ("we_fitness_updates", "org_xyz456", None, "integration.updated", "enabled", None),
    ]


def test_the_world_file_reference_documents_every_webhook_endpoint_field() -> None:
    text = (DOCS / "world-files.md").read_text(encoding="utf-8")
    table = text.split("### `webhook_endpoints`", 1)[1].split("\n\n", 2)[1]
    documented = [line.split("|")[1].strip().strip("`") for line in table.splitlines()[2:]]
    assert sorted(documented) == sorted(WebhookEndpoint.model_fields)
