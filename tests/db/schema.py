"""What the database's schema looks like, against `cbstop.db.tables.metadata`."""

from __future__ import annotations

import sqlite3
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Index, create_engine

from cbstop.db.database import sqlite_path
from cbstop.db.migrate import sqlalchemy_url
from cbstop.db.tables import metadata


def schema_differences(database_url: str) -> list[Any]:
    """Alembic's list of differences between the database and the metadata (empty: same)."""
    engine = create_engine(sqlalchemy_url(database_url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diffs = list(compare_metadata(context, metadata))
    finally:
        engine.dispose()
    if database_url.startswith("sqlite:///"):
        diffs = _sqlite_descending_indexes(database_url, diffs)
    return diffs


def _expected_columns(index: Index) -> list[tuple[str, int]]:
    out = []
    for element in index.expressions:
        if isinstance(element, Column):
            out.append((element.name, 0))
        else:
            name, _, order = str(element).partition(" ")
            out.append((name, int(order.strip().upper() == "DESC")))
    return out


def _sqlite_descending_indexes(database_url: str, diffs: list[Any]) -> list[Any]:
    """SQLite reflects `created_at DESC` as a plain column, so alembic reports every
    descending index as removed and added again; check those with PRAGMA instead."""
    descending = {
        index.name: index
        for table in metadata.tables.values()
        for index in table.indexes
        if any(not isinstance(e, Column) for e in index.expressions)
    }
    kept = [
        d for d in diffs if not (d[0] in ("add_index", "remove_index") and d[1].name in descending)
    ]
    conn = sqlite3.connect(sqlite_path(database_url))
    try:
        for name, index in descending.items():
            rows = conn.execute(f"PRAGMA index_xinfo({name})").fetchall()
            got = [(r[2], r[3]) for r in rows if r[5]]  # key columns: (name, desc)
            if got != _expected_columns(index):
                kept.append(("index_differs", name, got))
    finally:
        conn.close()
    return kept
