"""Every key of tests/worlds/matrix.json against every event, on GET one, the list and the
cursor (CONTRACT 3.4 with 1.2-1.4): events have the scope of integrations.

The oracle is tests/test_authorisation_matrix.py's, from the world data alone: a revoked key
is 401; a key without `integrations:read` is 403; an event of an organisation outside the
key's scope is exactly one that does not exist: 404 on GET one (the same body as an unknown
id), absent from every list, 422 on `starting_after` (the same body as an unknown id).
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.events.conftest import WRITERS, make_trail
from tests.events.helpers import EVENTS, list_all
from tests.integrations.helpers import auth, error_entries, nothing_changes
from tests.support import execute
from tests.test_authorisation_matrix import KEY_IDS, refusal, scope

READERS = [k for k in KEY_IDS if refusal(k, "integrations:read") is None]
REFUSED = [k for k in KEY_IDS if refusal(k, "integrations:read") is not None]


def newest_first(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trail's events in the order they were made, newest first: organisations in
    WRITERS' order, each a create and then a rename."""
    order = [org for org, _, _ in WRITERS]

    def made(event: dict[str, Any]) -> int:
        updated = event["type"] == "integration.updated"
        return 2 * order.index(str(event["organisation_id"])) + int(updated)

    return sorted(events, key=made, reverse=True)


def visible(key_id: str, trail: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the oracle says the key lists, newest first."""
    return newest_first([e for e in trail if e["organisation_id"] in scope(key_id)])


def test_the_trail_covers_every_organisation(trail: list[dict[str, Any]]) -> None:
    assert {e["organisation_id"] for e in trail} == {org for org, _, _ in WRITERS}


@pytest.mark.parametrize("key_id", READERS)
def test_a_key_lists_exactly_the_events_of_its_scope_newest_first(
    trail_client: TestClient, trail: list[dict[str, Any]], key_id: str
) -> None:
    assert list_all(trail_client, auth(key_id)) == visible(key_id, trail)
    # One event per page: the chain is the same.
    assert list_all(trail_client, auth(key_id), {"limit": 1}) == visible(key_id, trail)


@pytest.mark.parametrize("key_id", READERS)
def test_a_key_gets_the_events_of_its_scope_and_404_for_the_others(
    trail_client: TestClient, trail_url: str, trail: list[dict[str, Any]], key_id: str
) -> None:
    unknown = trail_client.get(f"{EVENTS}/evt_doesNotExist0000000000", headers=auth(key_id))
    assert unknown.status_code == 404
    with nothing_changes(trail_url):
        for event in trail:
            answer = trail_client.get(f"{EVENTS}/{event['id']}", headers=auth(key_id))
            if event["organisation_id"] in scope(key_id):
                assert answer.status_code == 200, (key_id, event["id"], answer.text)
                assert answer.json() == event
            else:
                assert answer.status_code == 404, (key_id, event["id"], answer.text)
                assert error_entries(answer) == error_entries(unknown)


@pytest.mark.parametrize("key_id", READERS)
def test_an_event_outside_the_scope_is_a_cursor_that_does_not_exist(
    trail_client: TestClient, trail_url: str, trail: list[dict[str, Any]], key_id: str
) -> None:
    mine = visible(key_id, trail)
    unknown = trail_client.get(
        EVENTS, headers=auth(key_id), params={"starting_after": "evt_doesNotExist0000000000"}
    )
    assert unknown.status_code == 422
    with nothing_changes(trail_url):
        for event in trail:
            answer = trail_client.get(
                EVENTS, headers=auth(key_id), params={"starting_after": event["id"], "limit": 100}
            )
            if event in mine:
                assert answer.status_code == 200, (key_id, event["id"], answer.text)
                older = mine[mine.index(event) + 1 :]
                assert answer.json() == {"items": older, "has_more": False}
            else:
                assert answer.status_code == 422, (key_id, event["id"], answer.text)
                assert error_entries(answer) == error_entries(unknown)
                assert error_entries(answer)[0]["field"] == "starting_after"


@pytest.mark.parametrize("key_id", READERS)
def test_an_integration_filter_outside_the_scope_lists_nothing(
    trail_client: TestClient, trail: list[dict[str, Any]], key_id: str
) -> None:
    for integration_id in {e["integration_id"] for e in trail}:
        listed = list_all(trail_client, auth(key_id), {"integration_id": integration_id})
        assert listed == [
            e for e in visible(key_id, trail) if e["integration_id"] == integration_id
        ]


@pytest.mark.parametrize("key_id", REFUSED)
def test_a_key_refused_before_its_scope_is_refused_for_every_event(
    trail_client: TestClient, trail_url: str, trail: list[dict[str, Any]], key_id: str
) -> None:
    expected = refusal(key_id, "integrations:read")
    with nothing_changes(trail_url):
        for path in [EVENTS, *(f"{EVENTS}/{e['id']}" for e in trail)]:
            answer = trail_client.get(path, headers=auth(key_id))
            assert answer.status_code == expected, (key_id, path, answer.text)


def test_a_group_sees_the_events_of_the_organisations_assigned_to_it_now(
    client: TestClient, database_url: str
) -> None:
    trail = make_trail(client)
    idle = auth("key_unassigned_a")
    a2 = newest_first([e for e in trail if e["organisation_id"] == "org_a2"])
    assert list_all(client, idle) == []
    assert client.get(f"{EVENTS}/{a2[0]['id']}", headers=idle).status_code == 404

    execute(
        database_url,
        "INSERT INTO partner_group_organisations (partner_group_id, organisation_id, partner_id)"
        " VALUES (?, ?, ?)",
        "pgrp_a_unassigned",
        "org_a2",
        "ptr_a",
    )
    assert list_all(client, idle) == a2
    assert client.get(f"{EVENTS}/{a2[0]['id']}", headers=idle).json() == a2[0]
    after = client.get(EVENTS, headers=idle, params={"starting_after": a2[0]["id"]})
    assert after.json() == {"items": a2[1:], "has_more": False}

    execute(
        database_url,
        "DELETE FROM partner_group_organisations WHERE partner_group_id = ?",
        "pgrp_a_unassigned",
    )
    assert list_all(client, idle) == []
    assert client.get(f"{EVENTS}/{a2[0]['id']}", headers=idle).status_code == 404
    gone = client.get(EVENTS, headers=idle, params={"starting_after": a2[0]["id"]})
    assert gone.status_code == 422
