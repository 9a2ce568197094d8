"""Every create and every PATCH that changes a value records exactly one event, in the same
unit of work as the change (CONTRACT 3.4); nothing else records one.

These read the stored rows, so they hold whether or not an event is listed yet: on
PostgreSQL the API lists an event only once the sequencer has numbered it.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from tests.integrations.helpers import auth, create_body, world
from tests.support import api_client, query, snapshot

EVENT_ROW = (
    "SELECT id, type, created_at, organisation_id, partner_id, integration_id, data, "
    "request_id, idempotency_key, actor_type FROM events"
)


@pytest.fixture
def api(database_url: str) -> Iterator[TestClient]:
    """The real app over a fresh database holding the matrix world."""
    with api_client(database_url, world("matrix")) as client:
        yield client


def events(database_url: str, where: str = "", *params: Any) -> list[dict[str, Any]]:
    """The stored events (oldest first by time), `data` parsed."""
    rows = query(database_url, f"{EVENT_ROW} {where} ORDER BY created_at, id", *params)
    keys = [
        "id",
        "type",
        "created_at",
        "organisation_id",
        "partner_id",
        "integration_id",
        "data",
        "request_id",
        "idempotency_key",
        "actor_type",
    ]
    out = [dict(zip(keys, row, strict=True)) for row in rows]
    for event in out:
        event["data"] = orjson.loads(event["data"])
    return out


def test_a_create_records_one_created_event_with_the_integration_as_answered(
    api: TestClient, database_url: str
) -> None:
    before = time.time_ns() // 1000
    answer = api.post(
        "/v1/integrations",
        json=create_body(),
        headers={**auth("key_org_a1"), "X-Request-Id": "req-create-1"},
    )
    assert answer.status_code == 201
    [event] = events(database_url)
    assert re.fullmatch(r"evt_[0-9a-f]{29}", event["id"])
    assert event["type"] == "integration.created"
    assert before <= event["created_at"] <= time.time_ns() // 1000
    assert event["organisation_id"] == "org_a1"
    assert event["partner_id"] == "ptr_a"
    assert event["integration_id"] == answer.json()["id"]
    assert event["data"] == {"object": answer.json()}
    assert event["request_id"] == "req-create-1"
    assert event["idempotency_key"] is None
    assert event["actor_type"] == "organisation"


@pytest.mark.parametrize(
    ("key_id", "actor"),
    [("key_org_a1", "organisation"), ("key_admin_a", "partner"), ("key_assigned_a", "partner")],
)
def test_the_actor_is_the_kind_of_key_that_made_the_change(
    api: TestClient, database_url: str, key_id: str, actor: str
) -> None:
    assert api.post("/v1/integrations", json=create_body(), headers=auth(key_id)).status_code == 201
    [event] = events(database_url)
    assert event["actor_type"] == actor


def test_a_keyed_create_records_its_key_and_its_replay_records_nothing(
    api: TestClient, database_url: str
) -> None:
    headers = {**auth("key_org_a1"), "Idempotency-Key": "create-once"}
    first = api.post("/v1/integrations", json=create_body(), headers=headers)
    assert first.status_code == 201
    after_first = snapshot(database_url)
    again = api.post("/v1/integrations", json=create_body(), headers=headers)
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert snapshot(database_url) == after_first
    [event] = events(database_url)
    assert event["idempotency_key"] == "create-once"
    assert event["request_id"] == first.headers["X-Request-Id"]


@pytest.mark.parametrize(
    ("change", "previous"),
    [
        ({"name": "Renamed"}, {"name": "A1 orders"}),
        ({"status": "DISABLED"}, {"status": "ENABLED"}),
        ({"name": "Renamed", "status": "DISABLED"}, {"name": "A1 orders", "status": "ENABLED"}),
        ({"name": "A1 orders", "status": "DISABLED"}, {"status": "ENABLED"}),
    ],
)
def test_a_patch_that_changes_values_records_one_updated_event_with_what_they_were(
    api: TestClient, database_url: str, change: dict[str, str], previous: dict[str, str]
) -> None:
    answer = api.patch(
        "/v1/integrations/int_a1_orders",
        json=change,
        headers={**auth("key_admin_a"), "Idempotency-Key": "patch-1", "X-Request-Id": "req-p"},
    )
    assert answer.status_code == 200
    [event] = events(database_url)
    assert event["type"] == "integration.updated"
    assert event["organisation_id"] == "org_a1"
    assert event["partner_id"] == "ptr_a"
    assert event["integration_id"] == "int_a1_orders"
    assert event["data"] == {"object": answer.json(), "previous_attributes": previous}
    assert event["request_id"] == "req-p"
    assert event["idempotency_key"] == "patch-1"
    assert event["actor_type"] == "partner"


@pytest.mark.parametrize(
    ("integration_id", "change"),
    [
        ("int_a1_orders", {"name": "A1 orders"}),  # its name already
        ("int_a2_orders", {"status": "DISABLED"}),  # already disabled
        ("int_a2_orders", {"name": "A2 orders", "status": "DISABLED"}),
    ],
)
def test_a_patch_that_changes_nothing_records_nothing(
    api: TestClient, database_url: str, integration_id: str, change: dict[str, str]
) -> None:
    before = snapshot(database_url)
    answer = api.patch(
        f"/v1/integrations/{integration_id}", json=change, headers=auth("key_admin_a")
    )
    assert answer.status_code == 200
    assert snapshot(database_url) == before


def test_a_replayed_patch_records_nothing(api: TestClient, database_url: str) -> None:
    headers = {**auth("key_org_a1"), "Idempotency-Key": "rename-once"}
    first = api.patch("/v1/integrations/int_a1_orders", json={"name": "Once"}, headers=headers)
    assert first.status_code == 200
    after_first = snapshot(database_url)
    again = api.patch("/v1/integrations/int_a1_orders", json={"name": "Once"}, headers=headers)
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert snapshot(database_url) == after_first
    assert len(events(database_url)) == 1


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "code"),
    [
        ("POST", "/v1/integrations", create_body(organisation_id="org_b1"), {}, 404, "NOT_FOUND"),
        (
            "POST",
            "/v1/integrations",
            create_body(merchant_ids=["mrch_a2_1"]),
            {},
            422,
            "INVALID_MERCHANT_IDS",
        ),
        ("PATCH", "/v1/integrations/int_b1_orders", {"name": "x"}, {}, 404, "NOT_FOUND"),
        (
            "PATCH",
            "/v1/integrations/int_a1_stripe",
            {"name": "x"},
            {},
            422,
            "INVALID_INTEGRATION_TYPE",
        ),
        (
            "PATCH",
            "/v1/integrations/int_a1_orders",
            {"name": "x"},
            {"If-Match": '"7"'},
            412,
            "PRECONDITION_FAILED",
        ),
        ("PATCH", "/v1/integrations/int_a1_orders", {}, {}, 422, "MISSING_UPDATE_FIELDS"),
    ],
)
def test_a_refused_write_records_nothing(
    api: TestClient,
    database_url: str,
    method: str,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    before = snapshot(database_url)
    answer = api.request(method, path, json=body, headers={**auth("key_org_a1"), **headers})
    assert answer.status_code == status
    assert answer.json()["errors"][0]["code"] == code
    assert snapshot(database_url) == before


def numbered(database_url: str, timeout: float = 10.0) -> None:
    """Wait until every stored event has its number (PostgreSQL's sequencer runs in the
    background after each write)."""
    deadline = time.monotonic() + timeout
    while query(database_url, "SELECT count(*) FROM events WHERE seq IS NULL") != [(0,)]:
        assert time.monotonic() < deadline, "events were not numbered in time"
        time.sleep(0.02)


def test_events_of_one_integration_chain_even_when_patches_race(
    api: TestClient, database_url: str
) -> None:
    """Concurrent renames of one integration: in the events' order, each one's
    `previous_attributes` is the name the one before it left, and its time is later."""
    names = [f"Name {n}" for n in range(4)]

    def rename(worker: int) -> None:
        for n in range(12):
            answer = api.patch(
                "/v1/integrations/int_a1_orders",
                json={"name": names[(worker + n) % len(names)]},
                headers=auth("key_org_a1"),
            )
            assert answer.status_code == 200

    threads = [threading.Thread(target=rename, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    numbered(database_url)
    rows = query(
        database_url,
        "SELECT created_at, data FROM events WHERE integration_id = ? ORDER BY seq",
        "int_a1_orders",
    )
    chain = [orjson.loads(data) for _, data in rows]
    final = api.get("/v1/integrations/int_a1_orders", headers=auth("key_org_a1")).json()
    assert len(chain) >= 12, "renames to another name record events"
    left = "A1 orders"
    for event in chain:
        assert event["previous_attributes"] == {"name": left}
        assert event["object"]["name"] != left
        left = event["object"]["name"]
    assert left == final["name"]
    times = [created_at for created_at, _ in rows]
    assert times == sorted(times) and len(set(times)) == len(times)


def test_every_event_is_numbered_once_in_order_and_the_log_knows_the_last(
    api: TestClient, database_url: str
) -> None:
    for n in range(5):
        body = create_body(name=f"Feed {n}")
        assert (
            api.post("/v1/integrations", json=body, headers=auth("key_org_a1")).status_code == 201
        )
        assert (
            api.patch(
                "/v1/integrations/int_a1_orders", json={"name": f"N{n}"}, headers=auth("key_org_a1")
            ).status_code
            == 200
        )
    numbered(database_url)
    seqs = [row[0] for row in query(database_url, "SELECT seq FROM events ORDER BY created_at")]
    assert seqs == list(range(1, 11))
    assert query(database_url, "SELECT last_seq FROM event_log") == [(10,)]
