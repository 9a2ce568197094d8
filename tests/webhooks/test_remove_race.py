"""`webhooks remove` and an attempt being recorded for the same endpoint, at the same moment
(PostgreSQL; SQLite runs one writer at a time): one waits for the other, and neither fails
on the other's foreign key."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from cbstop.db.database import open_database
from cbstop.webhooks.delivery import HOLD_ENDPOINT_POSTGRES, RECORD
from cbstop.webhooks.endpoints import remove_endpoint
from cbstop.world.loader import load_world
from tests.conftest import _require_postgres
from tests.integrations.helpers import world
from tests.support import TEST_KEY_SECRET, DatabaseMaker, make_settings, query


@pytest.fixture
def url(database_maker: DatabaseMaker) -> Iterator[str]:
    _require_postgres()
    with database_maker.database("postgresql") as made:
        load_world(made, world("matrix"), key_secret=TEST_KEY_SECRET)
        with psycopg.connect(made, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO webhook_endpoints (id, organisation_id, url, secret, event_types, "
                "status, created_at) VALUES ('we_x', 'org_a1', 'http://127.0.0.1:9/', "
                "'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', '', 'enabled', 1)"
            )
            conn.execute(
                "INSERT INTO webhook_deliveries VALUES ('we_x', 'evt_1', 1, 'pending', 1, 5)"
            )
        yield made


def psycopg_sql(sql: str, count: int) -> str:
    for n in range(count, 0, -1):
        sql = sql.replace(f"${n}", f"%(p{n})s")
    return sql


def record_attempt(conn: psycopg.Connection) -> bool:
    """The deliverer's recording of an attempt, in the caller's open transaction: False if
    the endpoint was gone."""
    held = conn.execute(psycopg_sql(HOLD_ENDPOINT_POSTGRES, 1), {"p1": "we_x"}).fetchone()
    if held is None:
        return False
    values = ("we_x", "evt_1", 1, 1, 1, 200, None, "w")
    conn.execute(psycopg_sql(RECORD, 8), {f"p{n}": v for n, v in enumerate(values, 1)})
    return True


def remove_in_thread(url: str, outcome: list[object]) -> threading.Thread:
    async def remove() -> None:
        db = await open_database(url, make_settings(url))
        try:
            await remove_endpoint(db, "we_x")
            outcome.append("removed")
        except Exception as exc:  # the test asserts there was none
            outcome.append(exc)
        finally:
            await db.close()

    thread = threading.Thread(target=lambda: asyncio.run(remove()))
    thread.start()
    return thread


def test_remove_waits_for_an_attempt_being_recorded_and_removes_it_too(url: str) -> None:
    outcome: list[object] = []
    with psycopg.connect(url) as deliverer:
        assert record_attempt(deliverer)
        thread = remove_in_thread(url, outcome)
        time.sleep(0.5)
        assert outcome == [], "remove waits for the attempt's transaction"
        deliverer.commit()
    thread.join(10)
    assert outcome == ["removed"]
    for table in ("webhook_endpoints", "webhook_deliveries", "webhook_attempts"):
        assert query(url, f"SELECT count(*) FROM {table}") == [(0,)], table


def test_an_attempt_recorded_while_remove_runs_finds_the_endpoint_gone(url: str) -> None:
    with psycopg.connect(url) as remover:
        remover.execute("SELECT 1 FROM webhook_endpoints WHERE id = 'we_x' FOR UPDATE")
        found: list[bool] = []
        with psycopg.connect(url) as deliverer:
            thread = threading.Thread(target=lambda: found.append(record_attempt(deliverer)))
            thread.start()
            time.sleep(0.5)
            assert found == [], "the attempt waits for remove's transaction"
            remover.execute("DELETE FROM webhook_deliveries WHERE endpoint_id = 'we_x'")
            remover.execute("DELETE FROM webhook_endpoints WHERE id = 'we_x'")
            remover.commit()
            thread.join(10)
            deliverer.commit()
    assert found == [False]
    assert query(url, "SELECT count(*) FROM webhook_attempts") == [(0,)]
