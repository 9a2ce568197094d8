"""Webhook delivery inside the app (CONTRACT 3.5), on both databases, to a real receiver on
127.0.0.1: signed, retried with the same `webhook-id`, 410 disables, a timeout is retried, the
last failure gives up, and each endpoint gets exactly the events its owner can see."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from standardwebhooks.webhooks import Webhook
from starlette.testclient import TestClient

from tests.integrations.helpers import auth, create_body, world
from tests.support import api_client, execute, query
from tests.webhooks.receiver import (
    Receiver,
    Script,
    add_endpoint,
    attempts,
    deliveries,
    eventually,
)

# Fast retries, so a test sees a whole schedule in about a second.
FAST = {"webhook_retry_schedule": "0.2,0.2,0.2", "event_poll_interval": 0.05}


@pytest.fixture
def app(database_url: str) -> Iterator[TestClient]:
    """The app over the matrix world, retrying fast."""
    with api_client(database_url, world("matrix"), **FAST) as client:
        yield client


def create(client: TestClient, key: str = "key_org_a1", **over: Any) -> dict[str, Any]:
    """POST an integration; its representation."""
    response = client.post("/v1/integrations", json=create_body(**over), headers=auth(key))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def event_ids(database_url: str, integration_id: str) -> list[str]:
    """The ids of an integration's events, oldest first."""
    rows = query(
        database_url,
        "SELECT id FROM events WHERE integration_id = ? ORDER BY created_at, id",
        integration_id,
    )
    return [r[0] for r in rows]


def test_every_delivery_is_signed_and_is_the_event_as_the_api_shows_it(
    app: TestClient, database_url: str, receiver: Receiver
) -> None:
    secret = add_endpoint(database_url, "we_a1", receiver.url + "/a1", organisation_id="org_a1")
    created = create(app)
    patched = app.patch(
        f"/v1/integrations/{created['id']}", json={"name": "Renamed"}, headers=auth("key_org_a1")
    )
    assert patched.status_code == 200
    got = receiver.wait_for(lambda r: len(r) >= 2)
    ids = event_ids(database_url, created["id"])
    assert len(ids) == 2
    assert sorted(r.webhook_id for r in got) == sorted(ids)
    verifier = Webhook(secret)
    for request in got:
        assert request.path == "/a1"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["user-agent"].startswith("cbstop-webhooks/")
        # The reference verifier: signature and timestamp (within its 5 minutes' tolerance).
        assert verifier.verify(request.body, request.headers) == orjson.loads(request.body)
        shown = app.get(f"/v1/events/{request.webhook_id}", headers=auth("key_org_a1"))
        assert shown.status_code == 200
        assert orjson.loads(request.body) == shown.json()
    eventually(lambda: _all_delivered(database_url, {("we_a1", i) for i in ids}))
    assert [a[2:] for a in attempts(database_url)] == [(1, 200, None), (1, 200, None)]


def _all_delivered(database_url: str, expected: set[tuple[str, str]]) -> None:
    assert deliveries(database_url) == {key: ("delivered", 1) for key in expected}


def test_a_failing_receiver_gets_the_event_again_with_the_same_webhook_id(
    app: TestClient, database_url: str, receiver: Receiver
) -> None:
    receiver.script = Script(statuses=[500, 500])
    secret = add_endpoint(database_url, "we_a1", receiver.url, organisation_id="org_a1")
    created = create(app)
    got = receiver.wait_for(lambda r: len(r) >= 3)
    (event_id,) = event_ids(database_url, created["id"])
    assert [r.webhook_id for r in got] == [event_id] * 3
    for request in got:
        Webhook(secret).verify(request.body, request.headers)
    assert got[0].body == got[1].body == got[2].body
    eventually(lambda: _all_delivered_after(database_url, "we_a1", event_id, 3))
    assert attempts(database_url) == [
        ("we_a1", event_id, 1, 500, None),
        ("we_a1", event_id, 2, 500, None),
        ("we_a1", event_id, 3, 200, None),
    ]
    time.sleep(0.5)  # retries are 0.2 s apart: another would have come by now
    assert len(receiver.received()) == 3


def _all_delivered_after(database_url: str, endpoint: str, event_id: str, tries: int) -> None:
    assert deliveries(database_url) == {(endpoint, event_id): ("delivered", tries)}


def test_after_the_last_retry_the_delivery_has_failed_and_is_not_attempted_again(
    app: TestClient, database_url: str, receiver: Receiver
) -> None:
    receiver.script = Script(default=503)
    add_endpoint(database_url, "we_a1", receiver.url, organisation_id="org_a1")
    created = create(app)
    (event_id,) = event_ids(database_url, created["id"])
    # The first attempt and the schedule's three retries.
    receiver.wait_for(lambda r: len(r) >= 4)

    def failed() -> None:
        assert deliveries(database_url) == {("we_a1", event_id): ("failed", 4)}

    eventually(failed)
    assert [a[2:] for a in attempts(database_url)] == [(n, 503, None) for n in (1, 2, 3, 4)]
    assert query(database_url, "SELECT next_attempt_at FROM webhook_deliveries") == [(None,)]
    time.sleep(0.6)
    assert len(receiver.received()) == 4


def test_a_timeout_is_recorded_as_an_error_and_retried(
    database_url: str, receiver: Receiver
) -> None:
    receiver.script = Script(holds=[2.0])
    with api_client(database_url, world("matrix"), **FAST, webhook_timeout=0.5) as client:
        add_endpoint(database_url, "we_a1", receiver.url, organisation_id="org_a1")
        created = create(client)
        (event_id,) = event_ids(database_url, created["id"])
        receiver.wait_for(lambda r: len(r) >= 2)
        eventually(lambda: _all_delivered_after(database_url, "we_a1", event_id, 2))
    assert attempts(database_url) == [
        ("we_a1", event_id, 1, None, "timeout"),
        ("we_a1", event_id, 2, 200, None),
    ]
    durations = query(database_url, "SELECT duration_us FROM webhook_attempts ORDER BY attempt")
    assert 400_000 <= durations[0][0] < 1_500_000


def test_a_refused_connection_is_recorded_as_an_error_and_retried(
    app: TestClient, database_url: str, receiver: Receiver
) -> None:
    # A port nothing listens on: the receiver's, once it has stopped.
    url = receiver.url
    receiver.stop()
    add_endpoint(database_url, "we_a1", url, organisation_id="org_a1")
    created = create(app)
    (event_id,) = event_ids(database_url, created["id"])

    def gave_up() -> None:
        assert deliveries(database_url) == {("we_a1", event_id): ("failed", 4)}

    eventually(gave_up)
    assert [a[2:] for a in attempts(database_url)] == [
        (n, None, "connection refused") for n in (1, 2, 3, 4)
    ]


def test_410_disables_the_endpoint_cancels_its_pending_deliveries_and_sends_it_nothing_more(
    database_url: str, receiver: Receiver
) -> None:
    # One attempt at a time, the first held open: the other events are fanned out (pending)
    # while the receiver takes its time to answer 410.
    receiver.script = Script(statuses=[410], holds=[1.0])
    with api_client(database_url, world("matrix"), **FAST, webhook_concurrency=1) as client:
        add_endpoint(database_url, "we_gone", receiver.url + "/gone", organisation_id="org_a1")
        add_endpoint(database_url, "we_ok", receiver.url + "/ok", organisation_id="org_a1")
        first = create(client)
        receiver.wait_for(lambda r: any(x.path == "/gone" for x in r))
        later = [create(client, name=f"Later {n}") for n in range(2)]

        def disabled() -> None:
            rows = query(
                database_url,
                "SELECT status, disabled_reason FROM webhook_endpoints WHERE id = 'we_gone'",
            )
            assert rows[0][0] == "disabled" and "410" in rows[0][1]

        eventually(disabled)
        ids = [event_ids(database_url, i["id"])[0] for i in (first, *later)]
        # The other endpoint still gets every event.
        receiver.wait_for(lambda r: len([x for x in r if x.path == "/ok"]) >= 3)
        after = create(client, name="After the 410")
        (after_id,) = event_ids(database_url, after["id"])
        receiver.wait_for(lambda r: after_id in {x.webhook_id for x in r if x.path == "/ok"})

        def settled() -> None:
            states = deliveries(database_url)
            gone = {k[1]: v for k, v in states.items() if k[0] == "we_gone"}
            assert gone[ids[0]] == ("cancelled", 1)  # attempted once: the 410
            # Fanned out before the 410 and cancelled by it, never attempted; the event after
            # it was not fanned out to the disabled endpoint at all.
            for event_id in ids[1:]:
                assert gone.get(event_id, ("cancelled", 0)) == ("cancelled", 0)
            assert after_id not in gone
            assert all(v[0] == "delivered" for k, v in states.items() if k[0] == "we_ok")

        eventually(settled)
    assert [(r.path, r.webhook_id) for r in receiver.received("/gone")] == [("/gone", ids[0])]
    assert [a[2:] for a in attempts(database_url) if a[0] == "we_gone"] == [(1, 410, None)]


def test_a_delivery_whose_endpoint_was_disabled_or_event_purged_is_cancelled_unsent(
    app: TestClient, database_url: str, receiver: Receiver
) -> None:
    created = create(app)
    (event_id,) = event_ids(database_url, created["id"])
    eventually(lambda: _fanned_out(database_url, event_id))  # to no endpoint: none yet
    add_endpoint(database_url, "we_off", receiver.url, organisation_id="org_a1")
    add_endpoint(database_url, "we_on", receiver.url, organisation_id="org_a1")
    execute(database_url, "UPDATE webhook_endpoints SET status = 'disabled' WHERE id = 'we_off'")
    # As fan-out made them before the endpoint was disabled, and before the event was purged.
    now = time.time_ns() // 1000
    for endpoint, event in (("we_off", event_id), ("we_on", "evt_purged")):
        execute(
            database_url,
            "INSERT INTO webhook_deliveries (endpoint_id, event_id, created_at, state, attempts, "
            "next_attempt_at) VALUES (?, ?, ?, 'pending', 0, ?)",
            endpoint,
            event,
            now,
            now,
        )

    def cancelled() -> None:
        assert deliveries(database_url) == {
            ("we_off", event_id): ("cancelled", 0),
            ("we_on", "evt_purged"): ("cancelled", 0),
        }

    eventually(cancelled)
    assert receiver.received() == []
    assert attempts(database_url) == []


def _fanned_out(database_url: str, event_id: str) -> None:
    rows = query(
        database_url,
        "SELECT e.seq, l.fanned_out FROM events e, event_log l WHERE e.id = ?",
        event_id,
    )
    assert rows[0][0] is not None and rows[0][1] >= rows[0][0]


def test_each_endpoint_gets_the_events_its_owner_can_see_of_the_types_it_asked_for(
    app: TestClient, database_url: str, receiver: Receiver
) -> None:
    owners: dict[str, dict[str, str]] = {
        "we_org_a1": {"organisation_id": "org_a1"},
        "we_org_b1": {"organisation_id": "org_b1"},
        "we_admin_a": {"partner_group_id": "pgrp_a_admin"},
        "we_assigned_a": {"partner_group_id": "pgrp_a_assigned"},
        "we_unassigned_a": {"partner_group_id": "pgrp_a_unassigned"},
        "we_admin_b": {"partner_group_id": "pgrp_b_admin"},
    }
    for endpoint, owner in owners.items():
        add_endpoint(database_url, endpoint, f"{receiver.url}/{endpoint}", **owner)
    add_endpoint(
        database_url,
        "we_a1_updates",
        f"{receiver.url}/we_a1_updates",
        organisation_id="org_a1",
        event_types="integration.updated",
    )
    in_a1 = create(app)
    in_a2 = create(
        app, "key_admin_a", organisation_id="org_a2", merchant_ids=["mrch_a2_1"], name="A2 feed"
    )
    patched = app.patch(
        f"/v1/integrations/{in_a1['id']}", json={"status": "DISABLED"}, headers=auth("key_org_a1")
    )
    assert patched.status_code == 200
    a1_created, a1_updated = event_ids(database_url, in_a1["id"])
    (a2_created,) = event_ids(database_url, in_a2["id"])
    expected = {
        "we_org_a1": {a1_created, a1_updated},
        "we_admin_a": {a1_created, a1_updated, a2_created},
        "we_assigned_a": {a1_created, a1_updated},
        "we_a1_updates": {a1_updated},
    }
    total = sum(len(v) for v in expected.values())
    receiver.wait_for(lambda r: len(r) >= total)
    eventually(
        lambda: _all_delivered(
            database_url, {(endpoint, e) for endpoint, evs in expected.items() for e in evs}
        )
    )
    got: dict[str, set[str]] = {}
    for request in receiver.received():
        got.setdefault(request.path.lstrip("/"), set()).add(request.webhook_id)
    assert got == expected
    assert len(receiver.received()) == total


def test_a_database_that_is_down_is_tried_again_at_each_poll_and_warned_of_rarely(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from cbstop.db.database import open_database
    from cbstop.webhooks.delivery import Deliverer
    from tests.reliability.processes import free_port
    from tests.support import make_settings

    # Nothing listens there: every claim fails to connect.
    settings = make_settings(
        f"postgresql://postgres@127.0.0.1:{free_port()}/cbstop",
        event_poll_interval=0.02,
        pool_timeout=0.2,
    )

    async def run() -> bool:
        db = await open_database(settings.database_url, settings)
        deliverer = Deliverer(db, settings, "test:1")
        deliverer.start()
        await asyncio.sleep(0.5)
        alive = deliverer._task is not None and not deliverer._task.done()
        await deliverer.stop()
        await db.close()
        return alive

    with caplog.at_level(logging.WARNING, logger="cbstop"):
        assert asyncio.run(run())
    warnings = [r for r in caplog.records if "claiming webhook deliveries" in r.getMessage()]
    assert len(warnings) == 1  # one line, not one per poll
