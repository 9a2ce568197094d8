"""GET /v1/events and GET /v1/events/{event_id} (CONTRACT 3.4): the events' exact shape, the
filters, the parameters' bounds, and paging by `starting_after` and by the `Link` header.

Scope (which key sees which event) is tests/events/test_scope.py's.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.testclient import TestClient

from cbstop.events.routes import next_link
from tests.events.helpers import EVENTS, list_all, wait_for_events
from tests.integrations.helpers import (
    assert_error,
    assert_validation_error,
    auth,
    create_body,
    nothing_changes,
)

ORG_A1 = auth("key_org_a1")
RFC3339_MICROS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
LINK = re.compile(r'^<(/v1/events\?[^>]*)>; rel="next"$')


def micros(rfc3339: str) -> int:
    """`2026-12-03T10:15:05.123456Z` as microseconds since the epoch."""
    moment = datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def make_integrations(client: TestClient, count: int) -> list[str]:
    """`count` integrations created in org_a1, one after the other: their ids, oldest first."""
    ids = []
    for n in range(count):
        made = client.post("/v1/integrations", json=create_body(name=f"Feed {n}"), headers=ORG_A1)
        assert made.status_code == 201, made.text
        ids.append(made.json()["id"])
    return ids


def test_a_create_and_a_rename_are_listed_newest_first_exactly_as_documented(
    client: TestClient,
) -> None:
    before = time.time_ns() // 1000
    created = client.post(
        "/v1/integrations",
        json=create_body(),
        headers={**ORG_A1, "X-Request-Id": "req-create-1", "Idempotency-Key": "create-1"},
    )
    assert created.status_code == 201, created.text
    renamed = client.patch(
        f"/v1/integrations/{created.json()['id']}",
        json={"name": "Renamed", "status": "DISABLED"},
        headers={**auth("key_admin_a"), "X-Request-Id": "req-rename-1"},
    )
    assert renamed.status_code == 200, renamed.text
    after = time.time_ns() // 1000

    updated, made = wait_for_events(client, ORG_A1, 2)

    integration_id = created.json()["id"]
    for event in (updated, made):
        assert re.fullmatch(r"evt_[0-9a-f]{29}", event["id"]), event
        assert RFC3339_MICROS.match(event["created_at"]), event
        assert before <= micros(event["created_at"]) <= after
    assert micros(made["created_at"]) <= micros(updated["created_at"])
    assert made == {
        "id": made["id"],
        "type": "integration.created",
        "created_at": made["created_at"],
        "organisation_id": "org_a1",
        "integration_id": integration_id,
        "data": {"object": created.json()},
        "request": {"id": "req-create-1", "idempotency_key": "create-1"},
        "actor": {"type": "organisation"},
    }
    assert updated == {
        "id": updated["id"],
        "type": "integration.updated",
        "created_at": updated["created_at"],
        "organisation_id": "org_a1",
        "integration_id": integration_id,
        "data": {
            "object": renamed.json(),
            "previous_attributes": {"name": "New orders feed", "status": "ENABLED"},
        },
        "request": {"id": "req-rename-1", "idempotency_key": None},
        "actor": {"type": "partner"},
    }


def test_get_one_event_is_the_lists_item(client: TestClient) -> None:
    make_integrations(client, 1)
    [listed] = wait_for_events(client, ORG_A1, 1)
    answer = client.get(f"{EVENTS}/{listed['id']}", headers=ORG_A1)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == listed
    # With a trailing slash, as every path (CONTRACT 1.1).
    assert client.get(f"{EVENTS}/{listed['id']}/", headers=ORG_A1).json() == listed


@pytest.mark.parametrize(
    "event_id",
    ["evt_doesNotExist0000000000", "x" * 256, "evt_%00", "int_a1_orders", "%F0%9F%98%80"],
)
def test_an_event_that_does_not_exist_is_not_found(
    client: TestClient, database_url: str, event_id: str
) -> None:
    with nothing_changes(database_url):
        assert_error(client.get(f"{EVENTS}/{event_id}", headers=ORG_A1), 404, "NOT_FOUND")


def test_no_events_is_an_empty_last_page_without_a_link(client: TestClient) -> None:
    answer = client.get(EVENTS, headers=ORG_A1)
    assert answer.status_code == 200
    assert answer.json() == {"items": [], "has_more": False}
    assert "link" not in answer.headers


def test_pages_chain_by_starting_after_newest_first_each_event_once(client: TestClient) -> None:
    make_integrations(client, 7)
    everything = wait_for_events(client, ORG_A1, 7)
    assert [e["data"]["object"]["name"] for e in everything] == [
        f"Feed {n}" for n in reversed(range(7))
    ]
    pages: list[list[dict[str, Any]]] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        answer = client.get(EVENTS, headers=ORG_A1, params=params)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        pages.append(body["items"])
        if not body["has_more"]:
            assert "link" not in answer.headers
            break
        assert "link" in answer.headers
        params = {"limit": 3, "starting_after": body["items"][-1]["id"]}
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [e for page in pages for e in page] == everything


def test_pages_chain_by_the_link_header(client: TestClient) -> None:
    make_integrations(client, 5)
    everything = wait_for_events(client, ORG_A1, 5)
    seen: list[dict[str, Any]] = []
    url = f"{EVENTS}?limit=2"
    while url:
        answer = client.get(url, headers=ORG_A1)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        seen += body["items"]
        link = answer.headers.get("link")
        assert (link is not None) == body["has_more"]
        if link is None:
            break
        found = LINK.match(link)
        assert found is not None, link
        url = found.group(1)
        assert parse_qs(urlsplit(url).query) == {
            "limit": ["2"],
            "starting_after": [body["items"][-1]["id"]],
        }
    assert seen == everything


def test_a_page_exactly_at_the_end_says_no_more(client: TestClient) -> None:
    make_integrations(client, 2)
    wait_for_events(client, ORG_A1, 2)
    answer = client.get(EVENTS, headers=ORG_A1, params={"limit": 2})
    assert answer.json()["has_more"] is False
    assert len(answer.json()["items"]) == 2
    assert "link" not in answer.headers
    last = answer.json()["items"][-1]["id"]
    after = client.get(EVENTS, headers=ORG_A1, params={"starting_after": last})
    assert after.status_code == 200
    assert after.json() == {"items": [], "has_more": False}


def test_the_link_keeps_the_filters_percent_encoded(client: TestClient) -> None:
    first, second = make_integrations(client, 2)
    for integration_id in (first, first, second):
        answer = client.patch(
            f"/v1/integrations/{integration_id}",
            json={"name": f"Renamed {time.time_ns()}"},
            headers=ORG_A1,
        )
        assert answer.status_code == 200
    wait_for_events(client, ORG_A1, 5)
    params: dict[str, str | int] = {
        "type": "integration.updated",
        "integration_id": first,
        "limit": 1,
    }
    answer = client.get(EVENTS, headers=ORG_A1, params=params)
    assert answer.json()["has_more"] is True
    found = LINK.match(answer.headers["link"])
    assert found is not None
    query = parse_qs(urlsplit(found.group(1)).query)
    assert query == {
        "limit": ["1"],
        "starting_after": [answer.json()["items"][0]["id"]],
        "type": ["integration.updated"],
        "integration_id": [first],
    }
    following = client.get(found.group(1), headers=ORG_A1)
    assert following.status_code == 200
    assert [e["integration_id"] for e in following.json()["items"]] == [first]
    assert following.json()["has_more"] is False


def test_the_filters_select_by_type_and_by_integration(client: TestClient) -> None:
    first, second = make_integrations(client, 2)
    renamed = client.patch(f"/v1/integrations/{first}", json={"name": "X"}, headers=ORG_A1)
    assert renamed.status_code == 200
    everything = wait_for_events(client, ORG_A1, 3)

    def listed(**params: str) -> list[dict[str, Any]]:
        return list_all(client, ORG_A1, params)

    assert listed(type="integration.created") == [
        e for e in everything if e["type"] == "integration.created"
    ]
    assert [e["integration_id"] for e in listed(type="integration.updated")] == [first]
    assert listed(integration_id=first) == [e for e in everything if e["integration_id"] == first]
    assert listed(integration_id=second, type="integration.updated") == []
    # Any id: one with no events, one of another tenant, one that cannot exist.
    for other in ("int_nothing", "int_b1_orders", "x" * 255, "int_a1_orders"):
        assert listed(integration_id=other) == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=x", "limit"),
        ("limit=", "limit"),
        ("limit=1&limit=2", "limit"),
        ("type=integration.deleted", "type"),
        ("type=", "type"),
        ("type=integration.created&type=integration.updated", "type"),
        ("integration_id=", "integration_id"),
        (f"integration_id={'x' * 256}", "integration_id"),
        ("integration_id=a%00b", "integration_id"),
        ("starting_after=", "starting_after"),
        (f"starting_after={'x' * 256}", "starting_after"),
        ("offset=0", "offset"),
        ("organisation_id=org_a1", "organisation_id"),
    ],
)
def test_a_bad_or_unknown_parameter_is_a_validation_error_on_it(
    client: TestClient, database_url: str, query: str, field: str
) -> None:
    with nothing_changes(database_url):
        assert_validation_error(client.get(f"{EVENTS}?{query}", headers=ORG_A1), field)


def test_each_bad_parameter_is_named_once(client: TestClient) -> None:
    answer = client.get(f"{EVENTS}?limit=0&type=nope&colour=red", headers=ORG_A1)
    assert_validation_error(answer, "limit", "type", "colour")


@pytest.mark.parametrize(
    "cursor", ["evt_doesNotExist0000000000", "int_a1_orders", "evt_%00", "%F0%9F%98%80"]
)
def test_a_cursor_that_is_no_event_is_a_validation_error_on_starting_after(
    client: TestClient, database_url: str, cursor: str
) -> None:
    make_integrations(client, 1)
    wait_for_events(client, ORG_A1, 1)
    with nothing_changes(database_url):
        answer = client.get(f"{EVENTS}?starting_after={cursor}", headers=ORG_A1)
        assert_validation_error(answer, "starting_after")


@pytest.mark.parametrize(
    ("key", "status", "code"),
    [
        ("key_revoked_a1", 401, "UNAUTHORISED"),
        ("key_write_only_a1", 403, "FORBIDDEN"),
        ("key_no_abilities_a1", 403, "FORBIDDEN"),
    ],
)
def test_a_key_refused_before_its_scope_gets_401_or_403_on_both(
    client: TestClient, database_url: str, key: str, status: int, code: str
) -> None:
    make_integrations(client, 1)
    [event] = wait_for_events(client, ORG_A1, 1)
    with nothing_changes(database_url):
        # Before the query is looked at (CONTRACT 1.6): a bad limit does not change it.
        for path in (f"{EVENTS}?limit=0", f"{EVENTS}/{event['id']}"):
            answer = client.get(path, headers=auth(key))
            assert_error(answer, status, code)
            if status == 401:
                assert answer.headers["www-authenticate"] == "Bearer"


def test_no_key_is_401(client: TestClient) -> None:
    for path in (EVENTS, f"{EVENTS}/evt_x"):
        assert_error(client.get(path), 401, "UNAUTHORISED")


def test_the_read_only_key_reads_events(client: TestClient) -> None:
    make_integrations(client, 1)
    [event] = wait_for_events(client, ORG_A1, 1)
    read_only = auth("key_read_only_a1")
    assert client.get(EVENTS, headers=read_only).json()["items"] == [event]
    assert client.get(f"{EVENTS}/{event['id']}", headers=read_only).json() == event


def test_other_methods_are_405_with_allow(client: TestClient) -> None:
    answer = client.post(EVENTS, headers=ORG_A1, json={})
    assert_error(answer, 405, "METHOD_NOT_ALLOWED")
    assert answer.headers["allow"] == "GET, HEAD"
    answer = client.delete(f"{EVENTS}/evt_x", headers=ORG_A1)
    assert_error(answer, 405, "METHOD_NOT_ALLOWED")
    assert answer.headers["allow"] == "GET, HEAD"


def test_the_link_percent_encodes_what_it_carries() -> None:
    link = next_link(2, "evt_a-b_c", {"type": None, "integration_id": "a b&c=d/é%"})
    found = LINK.match(link)
    assert found is not None, link
    assert " " not in found.group(1) and "é" not in found.group(1)
    assert parse_qs(urlsplit(found.group(1)).query) == {
        "limit": ["2"],
        "starting_after": ["evt_a-b_c"],
        "integration_id": ["a b&c=d/é%"],
    }


def test_head_and_a_trailing_slash_answer_as_get(client: TestClient) -> None:
    make_integrations(client, 1)
    [event] = wait_for_events(client, ORG_A1, 1)
    assert client.get(f"{EVENTS}/", headers=ORG_A1).json()["items"] == [event]
    head = client.head(EVENTS, headers=ORG_A1)
    assert head.status_code == 200
    assert head.content == b""
