"""Writing webhook rows directly, as the fan-out and the deliverer would have."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import psycopg


def execute(database_url: str, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run one write statement (`?` parameters) once per row, and commit."""
    if database_url.startswith("sqlite:///"):
        conn = sqlite3.connect(database_url[len("sqlite:///") :])
        try:
            conn.executemany(sql, rows)
            conn.commit()
        finally:
            conn.close()
        return
    with psycopg.connect(database_url) as pg, pg.cursor() as cur:
        cur.executemany(sql.replace("?", "%s"), rows)
