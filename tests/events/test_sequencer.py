"""Events are numbered in commit order and fanned out to the endpoints that may see them,
each exactly once (cbstop/events/sequencer.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from cbstop.db.database import open_database
from cbstop.events.sequencer import BATCH, Progress, sequence
from cbstop.world.loader import load_world
from tests.conftest import _require_postgres
from tests.integrations.helpers import world
from tests.support import TEST_KEY_SECRET, DatabaseMaker, execute, make_settings, query

NOW = 1_800_000_000_000_000


def run_sequencer(database_url: str) -> Progress:
    async def run() -> Progress:
        db = await open_database(database_url, make_settings(database_url))
        try:
            return await sequence(db, NOW)
        finally:
            await db.close()

    return asyncio.run(run())


def insert_event(database_url: str, event_id: str, organisation: str, **over: Any) -> None:
    """An event row as a write stores it (on SQLite with the next number, as a write takes)."""
    partner = {"org_a1": "ptr_a", "org_a2": "ptr_a", "org_b1": "ptr_b", "org_d": None}
    row = {
        "id": event_id,
        "created_at": NOW,
        "type": "integration.created",
        "organisation_id": organisation,
        "partner_id": partner[organisation],
        "integration_id": "int_x",
        "data": '{"object": {}}',
        "request_id": "req",
        "idempotency_key": None,
        "actor_type": "organisation",
        **over,
    }
    columns = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    if database_url.startswith("sqlite:///"):
        # As a write on SQLite: the next number, taken in the same transaction.
        execute(
            database_url,
            f"INSERT INTO events ({columns}, seq) VALUES ({marks}, "
            "(SELECT last_seq + 1 FROM event_log WHERE id = 1))",
            *row.values(),
        )
        execute(database_url, "UPDATE event_log SET last_seq = last_seq + 1 WHERE id = 1")
        return
    execute(database_url, f"INSERT INTO events ({columns}) VALUES ({marks})", *row.values())


def add_endpoint(database_url: str, endpoint_id: str, owner: dict[str, str], **over: Any) -> None:
    row = {
        "id": endpoint_id,
        "organisation_id": owner.get("organisation_id"),
        "partner_group_id": owner.get("partner_group_id"),
        "url": f"http://127.0.0.1:9/{endpoint_id}",
        "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "event_types": "",
        "status": "enabled",
        "created_at": NOW,
        **over,
    }
    marks = ", ".join("?" for _ in row)
    execute(
        database_url,
        f"INSERT INTO webhook_endpoints ({', '.join(row)}) VALUES ({marks})",
        *row.values(),
    )


def deliveries(database_url: str) -> set[tuple[str, str]]:
    return set(
        query(
            database_url,
            "SELECT endpoint_id, event_id FROM webhook_deliveries "
            "WHERE state = 'pending' AND attempts = 0 AND next_attempt_at = ?",
            NOW,
        )
    )


@pytest.fixture
def matrix_url(database_url: str) -> str:
    load_world(database_url, world("matrix"), key_secret=TEST_KEY_SECRET)
    return database_url


def test_each_event_reaches_exactly_the_endpoints_whose_owner_can_see_it(matrix_url: str) -> None:
    add_endpoint(matrix_url, "we_org_a1", {"organisation_id": "org_a1"})
    add_endpoint(matrix_url, "we_org_d", {"organisation_id": "org_d"})
    add_endpoint(matrix_url, "we_admin_a", {"partner_group_id": "pgrp_a_admin"})
    add_endpoint(matrix_url, "we_assigned_a", {"partner_group_id": "pgrp_a_assigned"})
    add_endpoint(matrix_url, "we_unassigned_a", {"partner_group_id": "pgrp_a_unassigned"})
    add_endpoint(matrix_url, "we_admin_b", {"partner_group_id": "pgrp_b_admin"})
    add_endpoint(
        matrix_url,
        "we_updates_a1",
        {"organisation_id": "org_a1"},
        event_types="integration.updated",
    )
    add_endpoint(
        matrix_url,
        "we_both_a1",
        {"organisation_id": "org_a1"},
        event_types="integration.created integration.updated",
    )
    add_endpoint(matrix_url, "we_disabled_a1", {"organisation_id": "org_a1"}, status="disabled")
    insert_event(matrix_url, "evt_a1", "org_a1")
    insert_event(matrix_url, "evt_a2", "org_a2")
    insert_event(matrix_url, "evt_b1", "org_b1")
    insert_event(matrix_url, "evt_d", "org_d")
    insert_event(matrix_url, "evt_a1_updated", "org_a1", type="integration.updated")

    progress = run_sequencer(matrix_url)

    expected = {
        ("we_org_a1", "evt_a1"),
        ("we_admin_a", "evt_a1"),
        ("we_assigned_a", "evt_a1"),
        ("we_both_a1", "evt_a1"),
        ("we_admin_a", "evt_a2"),
        ("we_admin_b", "evt_b1"),
        ("we_org_d", "evt_d"),
        ("we_org_a1", "evt_a1_updated"),
        ("we_admin_a", "evt_a1_updated"),
        ("we_assigned_a", "evt_a1_updated"),
        ("we_updates_a1", "evt_a1_updated"),
        ("we_both_a1", "evt_a1_updated"),
    }
    assert deliveries(matrix_url) == expected
    assert progress.fanned_out == 5 and progress.deliveries == len(expected)
    assert query(matrix_url, "SELECT last_seq, fanned_out FROM event_log") == [(5, 5)]
    # Run again: nothing is numbered or fanned out twice.
    assert run_sequencer(matrix_url) == Progress(0, 0, 0)
    assert deliveries(matrix_url) == expected


def test_events_are_numbered_oldest_first_and_fanned_out_in_batches(matrix_url: str) -> None:
    add_endpoint(matrix_url, "we_org_a1", {"organisation_id": "org_a1"})
    count = BATCH + 7
    for n in range(count):
        # Times out of insertion order: the numbering follows the time (then the id).
        insert_event(matrix_url, f"evt_{n:05d}", "org_a1", created_at=NOW - (n % 3))
    progress = run_sequencer(matrix_url)
    assert progress.fanned_out == count and progress.deliveries == count
    rows = query(matrix_url, "SELECT id, created_at, seq FROM events ORDER BY seq")
    assert [seq for _, _, seq in rows] == list(range(1, count + 1))
    if matrix_url.startswith("postgresql"):
        assert [(t, i) for i, t, _ in rows] == sorted((t, i) for i, t, _ in rows)
    assert len(deliveries(matrix_url)) == count


@pytest.fixture
def postgres_matrix_url(database_maker: DatabaseMaker) -> Iterator[str]:
    """PostgreSQL only: SQLite numbers each event in its own write, one writer at a time."""
    _require_postgres()
    with database_maker.database("postgresql") as url:
        load_world(url, world("matrix"), key_secret=TEST_KEY_SECRET)
        yield url


def test_an_event_that_commits_late_is_numbered_after_those_numbered_before(
    postgres_matrix_url: str,
) -> None:
    """PostgreSQL: a write still open when the sequencer runs is numbered by a later run,
    above every number given before: a reader that paged past the others misses nothing."""
    matrix_url = postgres_matrix_url
    late = psycopg.connect(matrix_url)
    late.execute(
        "INSERT INTO events (id, created_at, type, organisation_id, partner_id, integration_id, "
        "data, request_id, idempotency_key, actor_type) VALUES ('evt_late', %s, "
        "'integration.created', 'org_a1', 'ptr_a', 'int_x', '{}', 'req', NULL, 'organisation')",
        (NOW - 1_000_000,),  # timed before the others: it began first
    )
    insert_event(matrix_url, "evt_early_1", "org_a1")
    insert_event(matrix_url, "evt_early_2", "org_a1")
    assert run_sequencer(matrix_url).numbered == 2
    late.commit()
    late.close()
    assert run_sequencer(matrix_url).numbered == 1
    seqs = dict(query(matrix_url, "SELECT id, seq FROM events"))
    assert seqs["evt_late"] > max(seqs["evt_early_1"], seqs["evt_early_2"])
