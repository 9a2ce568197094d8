"""A load's I/O in bulk: what the database holds for a world's ids, then the plan's rows.

Each table is read with one statement whatever the number of ids (PostgreSQL takes them as
one `text[]` parameter, SQLite as one JSON array that `json_each` unpacks), so checking a
million integrations costs one query, not a million. Rows go in with
`Connection.bulk_insert` (COPY on PostgreSQL, one `executemany` on SQLite), 100,000 at a
time.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from cbstop.db.database import Connection, Row
from cbstop.world.progress import Reporter
from cbstop.world.rows import COLUMNS, Existing, Lookups, Plan

COPY_CHUNK = 100_000
ANALYSED = ("organisations", "merchants", "integrations", "integration_merchants")


@dataclass(frozen=True)
class ByIds:
    """One lookup, written whole for each database; `$1` is the list of ids."""

    postgresql: str
    sqlite: str


PARTNERS = ByIds(
    "SELECT id, name FROM partners WHERE id = ANY($1::text[])",
    "SELECT id, name FROM partners WHERE id IN (SELECT value FROM json_each($1))",
)
ORGANISATIONS = ByIds(
    "SELECT id, name, partner_id FROM organisations WHERE id = ANY($1::text[])",
    "SELECT id, name, partner_id FROM organisations WHERE id IN (SELECT value FROM json_each($1))",
)
PARTNER_GROUPS = ByIds(
    "SELECT id, partner_id, name, is_admin FROM partner_groups WHERE id = ANY($1::text[])",
    "SELECT id, partner_id, name, is_admin FROM partner_groups "
    "WHERE id IN (SELECT value FROM json_each($1))",
)
GROUP_ORGANISATIONS = ByIds(
    "SELECT partner_group_id, organisation_id FROM partner_group_organisations "
    "WHERE partner_group_id = ANY($1::text[])",
    "SELECT partner_group_id, organisation_id FROM partner_group_organisations "
    "WHERE partner_group_id IN (SELECT value FROM json_each($1))",
)
MERCHANTS = ByIds(
    "SELECT id, organisation_id, name FROM merchants WHERE id = ANY($1::text[])",
    "SELECT id, organisation_id, name FROM merchants WHERE id IN (SELECT value FROM json_each($1))",
)
INTEGRATIONS = ByIds(
    "SELECT id, organisation_id, name, type, status FROM integrations WHERE id = ANY($1::text[])",
    "SELECT id, organisation_id, name, type, status FROM integrations "
    "WHERE id IN (SELECT value FROM json_each($1))",
)
INTEGRATION_MERCHANTS = ByIds(
    "SELECT integration_id, merchant_id FROM integration_merchants "
    "WHERE integration_id = ANY($1::text[]) ORDER BY integration_id, position",
    "SELECT integration_id, merchant_id FROM integration_merchants "
    "WHERE integration_id IN (SELECT value FROM json_each($1)) ORDER BY integration_id, position",
)
API_KEYS = ByIds(
    "SELECT id, key_hash, organisation_id, partner_group_id, abilities, revoked FROM api_keys "
    "WHERE id = ANY($1::text[])",
    "SELECT id, key_hash, organisation_id, partner_group_id, abilities, revoked FROM api_keys "
    "WHERE id IN (SELECT value FROM json_each($1))",
)
API_KEYS_BY_HASH = ByIds(
    "SELECT id, key_hash FROM api_keys WHERE key_hash = ANY($1::text[])",
    "SELECT id, key_hash FROM api_keys WHERE key_hash IN (SELECT value FROM json_each($1))",
)
WEBHOOK_ENDPOINTS = ByIds(
    "SELECT id, organisation_id, partner_group_id, url, secret, event_types "
    "FROM webhook_endpoints WHERE id = ANY($1::text[])",
    "SELECT id, organisation_id, partner_group_id, url, secret, event_types "
    "FROM webhook_endpoints WHERE id IN (SELECT value FROM json_each($1))",
)

# Shard 0 takes the load's increments; the API spreads its own over the shards.
ADD_ORGANISATION_COUNT = (
    "INSERT INTO organisation_integration_counts (organisation_id, shard, n) VALUES ($1, 0, $2) "
    "ON CONFLICT (organisation_id, shard) "
    "DO UPDATE SET n = organisation_integration_counts.n + excluded.n"
)
ADD_PARTNER_COUNT = (
    "INSERT INTO partner_integration_counts (partner_id, shard, n) VALUES ($1, 0, $2) "
    "ON CONFLICT (partner_id, shard) DO UPDATE SET n = partner_integration_counts.n + excluded.n"
)


async def fetch(conn: Connection, lookup: ByIds, ids: Sequence[str]) -> Sequence[Row]:
    """The rows `lookup` finds for `ids`, in one statement."""
    if not ids:
        return []
    if conn.dialect == "postgresql":
        return await conn.fetch(lookup.postgresql, list(ids))
    return await conn.fetch(lookup.sqlite, json.dumps(list(ids)))


async def fetch_existing(conn: Connection, ids: Lookups) -> Existing:
    """What the database holds for the ids the checks need: one query per table."""
    groups = await fetch(conn, PARTNER_GROUPS, ids.partner_groups)
    members: dict[str, set[str]] = {r["id"]: set() for r in groups}
    for a in await fetch(conn, GROUP_ORGANISATIONS, list(members)):
        members[a["partner_group_id"]].add(a["organisation_id"])
    integrations = await fetch(conn, INTEGRATIONS, ids.integrations)
    merchant_ids: dict[str, list[str]] = {r["id"]: [] for r in integrations}
    for link in await fetch(conn, INTEGRATION_MERCHANTS, list(merchant_ids)):
        merchant_ids[link["integration_id"]].append(link["merchant_id"])
    return Existing(
        partners={r["id"]: {"name": r["name"]} for r in await fetch(conn, PARTNERS, ids.partners)},
        organisations={
            r["id"]: {"name": r["name"], "partner_id": r["partner_id"]}
            for r in await fetch(conn, ORGANISATIONS, ids.organisations)
        },
        partner_groups={
            r["id"]: {
                "partner_id": r["partner_id"],
                "name": r["name"],
                "is_admin": bool(r["is_admin"]),
                "organisation_ids": members[r["id"]],
            }
            for r in groups
        },
        merchants={
            r["id"]: {"organisation_id": r["organisation_id"], "name": r["name"]}
            for r in await fetch(conn, MERCHANTS, ids.merchants)
        },
        integrations={
            r["id"]: {
                "organisation_id": r["organisation_id"],
                "name": r["name"],
                "type": r["type"],
                "status": r["status"],
                "merchant_ids": merchant_ids[r["id"]],
            }
            for r in integrations
        },
        api_keys={
            r["id"]: {
                "key_hash": r["key_hash"],
                "organisation_id": r["organisation_id"],
                "partner_group_id": r["partner_group_id"],
                "abilities": r["abilities"],
                "revoked": bool(r["revoked"]),
            }
            for r in await fetch(conn, API_KEYS, ids.api_keys)
        },
        key_owners={
            r["key_hash"]: r["id"] for r in await fetch(conn, API_KEYS_BY_HASH, ids.key_hashes)
        },
        webhook_endpoints={
            r["id"]: {
                "organisation_id": r["organisation_id"],
                "partner_group_id": r["partner_group_id"],
                "url": r["url"],
                "secret": r["secret"],
                "event_types": r["event_types"],
            }
            for r in await fetch(conn, WEBHOOK_ENDPOINTS, ids.webhook_endpoints)
        },
    )


async def write(conn: Connection, plan: Plan, reporter: Reporter, *, large: int) -> None:
    """Add the plan's rows; a table of `large` rows or more goes in with its checks deferred,
    and a load of as many rows refreshes the planner's statistics afterwards."""
    for table, rows in plan.rows.items():
        await _insert(conn, table, rows, reporter, large=len(rows) >= large)
    if plan.organisation_counts:
        await conn.executemany(ADD_ORGANISATION_COUNT, list(plan.organisation_counts.items()))
    if plan.partner_counts:
        await conn.executemany(ADD_PARTNER_COUNT, list(plan.partner_counts.items()))
    if sum(plan.added.values()) >= large:
        reporter.step("Refreshing statistics", 1)
        for table in ANALYSED:
            await conn.execute(f"ANALYZE {table}")


async def _insert(
    conn: Connection, table: str, rows: list[tuple[Any, ...]], reporter: Reporter, *, large: bool
) -> None:
    if not rows:
        return
    if large:
        reporter.step(f"Writing {table}", len(rows))
    async with _checks_deferred(conn, table, reporter, large):
        for start in range(0, len(rows), COPY_CHUNK):
            chunk = rows[start : start + COPY_CHUNK]
            await conn.bulk_insert(table, COLUMNS[table], chunk)
            if large:
                reporter.advance(len(chunk))


@asynccontextmanager
async def _checks_deferred(
    conn: Connection, table: str, reporter: Reporter, large: bool
) -> AsyncIterator[None]:
    """For a large COPY on PostgreSQL, check foreign keys once afterwards, not per row.

    The foreign keys are dropped and added back (one join each instead of a lookup per
    row), and an empty table's plain indexes are built after the rows are in. It all
    happens inside the load's transaction, so other sessions never see the table without
    them (they wait for the load instead), and a failure restores everything.
    """
    if not large or conn.dialect != "postgresql":
        yield
        return
    await conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
    foreign_keys = await conn.fetch(
        "SELECT conname, pg_get_constraintdef(oid) AS definition FROM pg_constraint "
        "WHERE conrelid = $1::regclass AND contype = 'f' ORDER BY conname",
        table,
    )
    indexes: Sequence[Row] = []
    if not await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
        indexes = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = current_schema() AND tablename = $1 AND indexname NOT IN "
            "(SELECT conname FROM pg_constraint WHERE conrelid = $1::regclass) "
            "ORDER BY indexname",
            table,
        )
    for fk in foreign_keys:
        await conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {_quote(fk['conname'])}")
    for index in indexes:
        await conn.execute(f"DROP INDEX {_quote(index['indexname'])}")
    yield
    reporter.step(f"Indexing {table}", 1)
    for index in indexes:
        await conn.execute(index["indexdef"])
    for fk in foreign_keys:
        await conn.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {_quote(fk['conname'])} {fk['definition']}"
        )


def _quote(name: str) -> str:
    """A catalog name as a PostgreSQL identifier."""
    return '"' + name.replace('"', '""') + '"'
