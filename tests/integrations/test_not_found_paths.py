"""Out of scope and nonexistent take the same path on PostgreSQL, so neither 404 is faster.

The 404s are already byte-identical (tests/test_authorisation_matrix.py); this is their
cost. Timing is too noisy for a test (`python -m bench.timing` measures it), so each
statement is run as an API session runs it (a prepared statement on its generic plan) under
EXPLAIN (ANALYZE, BUFFERS), once for an id of another tenant and once for an id that exists
nowhere, and the two executions must be the same: the same plan nodes, the same rows and
loops at each, the same buffers touched. When the scope test ran only on a row found by id,
another tenant's id cost one more buffer (its heap page), and for a group three more.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from cbstop.db.scope import ScopeKind
from cbstop.integrations import sql_postgres
from tests.conftest import _require_postgres
from tests.integrations.helpers import world
from tests.support import TEST_KEY_SECRET, DatabaseMaker

# Scope ids of the matrix world, and ids outside each scope that exist.
SCOPES: dict[ScopeKind, str] = {
    "organisation": "org_a1",
    "partner": "ptr_a",
    "group": "pgrp_a_assigned",
}
OTHER_TENANT = "int_b1_orders"  # partner ptr_b's
SAME_PARTNER = "int_a2_orders"  # partner ptr_a's, org_a2: not assigned to pgrp_a_assigned
OTHER_ORGANISATION = "org_b1"
UNASSIGNED_ORGANISATION = "org_a2"
# Inside the range of stored ids (past the greatest, a lookup reads no row at all).
NOWHERE = "int_c_nowhere"
NOWHERE_ORGANISATION = "org_c_nowhere"

# What must match between the two executions, node by node.
KEPT = (
    "Node Type",
    "Relation Name",
    "Index Name",
    "Index Cond",
    "Filter",
    "One-Time Filter",
    "Actual Rows",
    "Actual Loops",
    "Rows Removed by Filter",
    "Heap Fetches",
)


@pytest.fixture(scope="module")
def matrix_url(database_maker: DatabaseMaker) -> Iterator[str]:
    """A PostgreSQL database holding the matrix world, shared by this module's tests (they
    write nothing: every statement here is refused or rolled back)."""
    from cbstop.world.loader import load_world

    _require_postgres()
    with database_maker.database("postgresql") as url:
        load_world(url, world("matrix"), key_secret=TEST_KEY_SECRET)
        yield url


def _path(plan: dict[str, Any]) -> dict[str, Any]:
    """The plan tree with what must match: nodes, rows, and buffers touched (hit or read)."""
    return {
        **{k: plan[k] for k in KEPT if k in plan},
        "buffers": plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0),
        "children": [_path(child) for child in plan.get("Plans", [])],
    }


class Raw(str):
    """SQL written out (a typed array)."""


def _literal(value: Any) -> str:
    """A constant of this module as SQL (ids, numbers, NULL, a text array, `Raw` SQL)."""
    if isinstance(value, Raw):
        return value
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "ARRAY[" + ", ".join(_literal(v) for v in value) + "]::text[]"
    assert "'" not in value
    return f"'{value}'"


def _paths(url: str, sql: str, types: str, runs: list[tuple[Any, ...]]) -> list[Any]:
    """The path of each run's execution of `sql`, prepared as an API session prepares it;
    each inside a transaction rolled back, so a create that went wrong leaves nothing."""

    async def explain() -> list[Any]:
        conn = await asyncpg.connect(
            url,
            server_settings={
                "plan_cache_mode": "force_generic_plan",
                "max_parallel_workers_per_gather": "0",
                "jit": "off",
            },
        )
        try:
            await conn.execute(f"PREPARE s ({types}) AS {sql}")
            found = []
            for args in runs:
                call = f"EXECUTE s({', '.join(_literal(a) for a in args)})"
                tx = conn.transaction()
                await tx.start()
                try:
                    for _ in range(3):  # hint bits set, caches warm
                        await conn.execute(call)
                    text = await conn.fetchval(
                        f"EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, FORMAT JSON) {call}"
                    )
                finally:
                    await tx.rollback()
                found.append(_path(json.loads(text)[0]["Plan"]))
            return found
        finally:
            await conn.close()

    return asyncio.run(explain())


def _outside(kind: ScopeKind, same_partner: str, other_tenant: str) -> list[str]:
    """Ids outside the scope of `kind` that exist: another tenant's, and for a non-admin
    group also one of its own partner's that is not assigned to it."""
    return [other_tenant, same_partner] if kind == "group" else [other_tenant]


@pytest.mark.parametrize("kind", list(SCOPES))
def test_get_of_another_tenants_integration_takes_the_path_of_a_missing_one(
    matrix_url: str, kind: ScopeKind
) -> None:
    outside = _outside(kind, SAME_PARTNER, OTHER_TENANT)
    runs = [(i, SCOPES[kind]) for i in [NOWHERE, *outside]]
    nowhere, *elsewhere = _paths(matrix_url, sql_postgres.GET[kind], "text, text", runs)
    assert elsewhere == [nowhere] * len(outside)


@pytest.mark.parametrize("kind", list(SCOPES))
def test_patch_of_another_tenants_integration_takes_the_path_of_a_missing_one(
    matrix_url: str, kind: ScopeKind
) -> None:
    outside = _outside(kind, SAME_PARTNER, OTHER_TENANT)
    # One PATCH (the statement takes a batch, one array per column), without If-Match or key.
    event = (["evt_new"], ["req"], [None], ["organisation"])
    runs = [
        (
            *([i], ["Renamed"], [None], [SCOPES[kind]], Raw("ARRAY[false]")),
            *(*event, [None], [None], Raw("ARRAY[]::bigint[]"), Raw("ARRAY[]::bigint[]")),
            "CUSTOM_ORDERS",
        )
        for i in [NOWHERE, *outside]
    ]
    types = "text[], text[], text[], text[], boolean[], text[], text[], text[], text[], text[], "
    types += "text[], bigint[], bigint[], text"
    nowhere, *elsewhere = _paths(matrix_url, sql_postgres.UPDATE[kind], types, runs)
    assert elsewhere == [nowhere] * len(outside)


@pytest.mark.parametrize("kind", list(SCOPES))
def test_organisation_of_another_tenant_takes_the_path_of_a_missing_one(
    matrix_url: str, kind: ScopeKind
) -> None:
    outside = _outside(kind, UNASSIGNED_ORGANISATION, OTHER_ORGANISATION)
    runs = [(o, SCOPES[kind]) for o in [NOWHERE_ORGANISATION, *outside]]
    nowhere, *elsewhere = _paths(matrix_url, sql_postgres.ORGANISATION[kind], "text, text", runs)
    assert elsewhere == [nowhere] * len(outside)


@pytest.mark.parametrize("kind", list(SCOPES))
def test_create_in_another_tenants_organisation_takes_the_path_of_a_missing_one(
    matrix_url: str, kind: ScopeKind
) -> None:
    outside = _outside(kind, UNASSIGNED_ORGANISATION, OTHER_ORGANISATION)
    # One create (the statement takes a batch, one array per column), without a key.
    no_bytes = Raw("ARRAY[NULL]::bytea[]")
    runs = [
        (
            *(["int_new"], [o], ["New"], ["ENABLED"], Raw("ARRAY[1]::bigint[]"), [SCOPES[kind]]),
            *([None], [None], no_bytes, no_bytes, [None], [None]),
            *(["evt_new"], ["req"], [None], ["organisation"], ['{"object": {}}']),
            *(Raw("ARRAY[1]::bigint[]"), Raw("ARRAY[0]::integer[]"), ["mrch_a1_1"], 0),
        )
        for o in [NOWHERE_ORGANISATION, *outside]
    ]
    types = "text[], text[], text[], text[], bigint[], text[], text[], text[], bytea[], bytea[], "
    types += "text[], text[], text[], text[], text[], text[], text[], bigint[], integer[], text[], "
    types += "integer"
    nowhere, *elsewhere = _paths(matrix_url, sql_postgres.CREATE[kind], types, runs)
    assert elsewhere == [nowhere] * len(outside)


def test_an_integration_in_scope_takes_another_path(matrix_url: str) -> None:
    """The comparison sees a difference where there is one: found, the row goes on."""
    runs = [(NOWHERE, "org_b1"), (OTHER_TENANT, "org_b1")]
    nowhere, found = _paths(matrix_url, sql_postgres.GET["organisation"], "text, text", runs)
    assert nowhere != found
