"""Events past the retention are purged automatically, with their webhook deliveries and
attempts; nothing else is (CONTRACT 3.4)."""

from __future__ import annotations

import asyncio
import time

from cbstop.db.database import open_database
from cbstop.events.retention import BATCH, purge
from cbstop.world.loader import load_world
from tests.events.test_sequencer import add_endpoint, insert_event, run_sequencer
from tests.integrations.helpers import auth, create_body, world
from tests.support import (
    TEST_KEY_SECRET,
    api_client,
    execute,
    execute_many,
    make_settings,
    query,
    snapshot,
)

DAY = 86_400_000_000
NOW = time.time_ns() // 1000


def add_delivery(database_url: str, event_id: str, created_at: int, *, attempts: int) -> None:
    """A delivery of `event_id` to we_a1 with `attempts` recorded attempts."""
    execute(
        database_url,
        "INSERT INTO webhook_deliveries (endpoint_id, event_id, created_at, state, attempts, "
        "next_attempt_at) VALUES (?, ?, ?, 'delivered', ?, NULL)",
        "we_a1",
        event_id,
        created_at,
        attempts,
    )
    execute_many(
        database_url,
        "INSERT INTO webhook_attempts (endpoint_id, event_id, attempt, started_at, "
        "duration_us, status_code, error, worker) VALUES (?, ?, ?, ?, 1000, 200, NULL, 'w')",
        [("we_a1", event_id, n, created_at + n) for n in range(1, attempts + 1)],
    )


def run_purge(database_url: str, cutoff: int) -> dict[str, int]:
    async def run() -> dict[str, int]:
        db = await open_database(database_url, make_settings(database_url))
        try:
            return await purge(db, cutoff)
        finally:
            await db.close()

    return asyncio.run(run())


def test_purge_deletes_what_is_older_than_the_cutoff_and_nothing_else(database_url: str) -> None:
    load_world(database_url, world("matrix"), key_secret=TEST_KEY_SECRET)
    old = NOW - 31 * DAY
    for n in range(BATCH + 3):  # more than one batch
        insert_event(database_url, f"evt_old_{n:04d}", "org_a1", created_at=old + n)
    insert_event(database_url, "evt_edge", "org_a1", created_at=NOW - 30 * DAY)
    insert_event(database_url, "evt_new", "org_a1", created_at=NOW)
    run_sequencer(database_url)  # PostgreSQL: numbered, as the service numbers every event
    add_endpoint(database_url, "we_a1", {"organisation_id": "org_a1"})
    add_delivery(database_url, "evt_old_0000", old + 10, attempts=2)
    add_delivery(database_url, "evt_new", NOW, attempts=1)
    kept = snapshot(database_url)

    gone = run_purge(database_url, NOW - 30 * DAY)

    assert gone == {"events": BATCH + 3, "webhook_deliveries": 1, "webhook_attempts": 2}
    after = snapshot(database_url)
    assert [r[0] for r in after["events"]] == ["evt_edge", "evt_new"]
    assert [r[:2] for r in after["webhook_deliveries"]] == [("we_a1", "evt_new")]
    assert [r[:3] for r in after["webhook_attempts"]] == [("we_a1", "evt_new", 1)]
    purged = ("events", "webhook_deliveries", "webhook_attempts")
    assert {t: r for t, r in after.items() if t not in purged} == {
        t: r for t, r in kept.items() if t not in purged
    }
    assert run_purge(database_url, NOW - 30 * DAY) == {
        "events": 0,
        "webhook_deliveries": 0,
        "webhook_attempts": 0,
    }


def test_the_service_purges_events_past_the_retention_by_itself(database_url: str) -> None:
    with api_client(
        database_url, world("matrix"), event_retention_days=30, event_purge_interval=0.1
    ) as api:
        insert_event(database_url, "evt_long_ago", "org_a1", created_at=NOW - 31 * DAY)
        created = api.post("/v1/integrations", json=create_body(), headers=auth("key_org_a1"))
        assert created.status_code == 201
        deadline = time.monotonic() + 10
        while query(database_url, "SELECT id FROM events WHERE id = 'evt_long_ago'"):
            assert time.monotonic() < deadline, "the old event was not purged in time"
            time.sleep(0.05)
        [(kept,)] = query(database_url, "SELECT integration_id FROM events")
        assert kept == created.json()["id"]
