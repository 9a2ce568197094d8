"""A non-admin group's page on PostgreSQL: both ways of reading it return the contract's page.

`sql_postgres.LIST["group"]` walks the partner's index while the group holds at least 1/64
of its partner's integrations, and otherwise merges its organisations' own indexes. The
matrix world's desk group holds a third of its partner's integrations (the walk); here a
crowded neighbour makes it hold under 1/64, so the merge runs, with rows. EXPLAIN ANALYZE
shows which arm ran, so each test proves it exercised the branch it names.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest

from cbstop.integrations import sql_postgres
from tests.integrations.helpers import auth, with_integrations, world
from tests.support import api_client, query

DESK = auth("key_assigned_a")  # pgrp_a_assigned: org_a1 only
DESK_GROUP = "pgrp_a_assigned"
LIST = "/v1/integrations"


def _crowded_neighbour() -> dict[str, Any]:
    """The matrix world, org_a1 (the desk's) with 7 integrations, org_a2 with 502."""
    data = with_integrations(world("matrix"), "org_a1", "mrch_a1_1", 5)
    return with_integrations(data, "org_a2", "mrch_a2_1", 500)


def _newest_first(database_url: str, organisation_id: str) -> list[str]:
    rows = query(
        database_url,
        "SELECT id, created_at FROM integrations WHERE organisation_id = ?",
        organisation_id,
    )
    return [id_ for id_, _ in sorted(rows, key=lambda r: (-r[1], r[0]))]


def _rows_per_arm(database_url: str, limit: int, offset: int) -> dict[str, int]:
    """Rows each arm (`walk`, `merge`) of the group page produced, as PostgreSQL ran it in an
    API session: a prepared statement on its generic plan, no parallel workers."""

    async def explain() -> Any:
        conn = await asyncpg.connect(
            database_url,
            server_settings={
                "plan_cache_mode": "force_generic_plan",
                "max_parallel_workers_per_gather": "0",
            },
        )
        try:
            await conn.execute(
                "PREPARE page (text, bigint, bigint) AS " + sql_postgres.LIST["group"]
            )
            return await conn.fetchval(
                "EXPLAIN (ANALYZE, FORMAT JSON) "
                f"EXECUTE page('{DESK_GROUP}', {int(limit)}, {int(offset)})"
            )
        finally:
            await conn.close()

    # The arms are the two inputs of the page's UNION ALL, each behind a one-time filter:
    # `walk_is_cheaper` for the walk, its negation for the merge.
    found: dict[str, int] = {}

    def visit(node: dict[str, Any]) -> None:
        test = node.get("One-Time Filter")
        if test is not None and "walk_is_cheaper" not in str(node.get("Alias", "")):
            arm = "merge" if test.startswith("(NOT ") else "walk"
            assert arm not in found, node
            found[arm] = node["Actual Rows"] * node["Actual Loops"]
        for child in node.get("Plans", []):
            visit(child)

    visit(json.loads(asyncio.run(explain()))[0]["Plan"])
    assert set(found) == {"walk", "merge"}, found
    return found


@pytest.mark.parametrize(("limit", "offset"), [(20, 0), (3, 0), (3, 3), (3, 6), (3, 7)])
def test_a_group_under_a_64th_of_its_partner_pages_by_merging_its_organisations(
    postgres_url: str, limit: int, offset: int
) -> None:
    with api_client(postgres_url, _crowded_neighbour()) as client:
        response = client.get(LIST, params={"limit": limit, "offset": offset}, headers=DESK)

    expected = _newest_first(postgres_url, "org_a1")
    assert len(expected) == 7
    assert response.status_code == 200, response.text
    assert response.json()["count"] == 7
    assert [i["id"] for i in response.json()["items"]] == expected[offset : offset + limit]
    arms = _rows_per_arm(postgres_url, limit, offset)
    assert arms == {"walk": 0, "merge": len(expected[offset : offset + limit])}


def test_a_group_with_a_fair_share_pages_by_walking_its_partners_index(
    postgres_url: str,
) -> None:
    with api_client(postgres_url, world("matrix")) as client:
        response = client.get(LIST, headers=DESK)

    assert response.status_code == 200, response.text
    assert [i["id"] for i in response.json()["items"]] == _newest_first(postgres_url, "org_a1")
    assert response.json()["count"] == 2
    assert _rows_per_arm(postgres_url, 20, 0) == {"walk": 2, "merge": 0}
