"""Helpers the suites share: databases made and dropped per test, worlds, snapshots."""

from __future__ import annotations

import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from cbstop.db.migrate import migrate
from cbstop.settings import Settings

POSTGRES_SERVER = os.environ.get("CBSTOP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
TEST_KEY_SECRET = "test-key-secret-not-for-production"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

TABLES = (
    "partners",
    "partner_groups",
    "organisations",
    "partner_group_organisations",
    "merchants",
    "integrations",
    "integration_merchants",
    "api_keys",
    "organisation_integration_counts",
    "partner_integration_counts",
    "idempotency_keys",
    "events",
    "webhook_endpoints",
    "webhook_deliveries",
    "webhook_attempts",
)


def postgres_unavailable_reason() -> str | None:
    """Why PostgreSQL cannot be used for tests, or None if it can."""
    try:
        with psycopg.connect(f"{POSTGRES_SERVER}/postgres", connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {POSTGRES_SERVER} is not reachable: {exc}".splitlines()[0]
    return None


def _admin(sql: str) -> None:
    with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(sql)


class DatabaseMaker:
    """Makes a fresh migrated database per test from a template migrated once per process."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.tag = uuid.uuid4().hex[:10]
        self._pg_template: str | None = None
        self._sqlite_template: Path | None = None
        self._made: list[str] = []

    def _template(self, dialect: str) -> str:
        if dialect == "sqlite":
            if self._sqlite_template is None:
                path = self.workdir / "template.db"
                migrate(f"sqlite:///{path}")
                sqlite3.connect(path).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
                self._sqlite_template = path
            return str(self._sqlite_template)
        if self._pg_template is None:
            name = f"cbstop_tmpl_{self.tag}"
            _admin(f'CREATE DATABASE "{name}"')
            self._made.append(name)
            migrate(f"{POSTGRES_SERVER}/{name}")
            self._pg_template = name
        return self._pg_template

    @contextmanager
    def database(self, dialect: str, *, migrated: bool = True) -> Iterator[str]:
        """A URL of a new database of that dialect, dropped afterwards."""
        name = f"cbstop_test_{self.tag}_{uuid.uuid4().hex[:8]}"
        if dialect == "sqlite":
            path = self.workdir / f"{name}.db"
            if migrated:
                shutil.copyfile(self._template("sqlite"), path)
            yield f"sqlite:///{path}"
            for suffix in ("", "-wal", "-shm", ".migrate-lock"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            return
        template = f' TEMPLATE "{self._template("postgresql")}"' if migrated else ""
        _admin(f'CREATE DATABASE "{name}"{template}')
        try:
            yield f"{POSTGRES_SERVER}/{name}"
        finally:
            _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        for name in self._made:
            _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_settings(database_url: str, **over: Any) -> Settings:
    """Settings for a test: its own database and a test secret, no environment."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "key_secret": TEST_KEY_SECRET,
        "access_log": False,
        # Rate limits only where a test is about them (tests/ratelimit): the other suites send
        # hundreds of requests with one key, and bad keys on purpose, from one address.
        "rate_limit": "off",
        "auth_failure_limit": "off",
    }
    values.update(over)
    return Settings(**values)


# What a snapshot reads of each table: every column, except a key's last use, which any
# authenticated request moves (to the minute, written in the background: CONTRACT 3.6) and
# which "nothing changed" is not about (tests/keys checks it on its own), and an event's
# number, which PostgreSQL's sequencer gives in the background after the write that recorded
# it (tests/events checks it).
SNAPSHOT_SQL = {table: f"SELECT * FROM {table}" for table in TABLES} | {
    "api_keys": "SELECT id, key_hash, organisation_id, partner_group_id, abilities, revoked, "
    "revoked_at, created_at, secret_fingerprint, expires_at FROM api_keys",
    "events": "SELECT id, created_at, type, organisation_id, partner_id, integration_id, data, "
    "request_id, idempotency_key, actor_type FROM events",
}


def snapshot(database_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (but keys' last use), in a stable order: compare two to prove
    nothing changed."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    if database_url.startswith("sqlite:///"):
        conn = sqlite3.connect(database_url[len("sqlite:///") :])
        try:
            for table in TABLES:
                rows = conn.execute(SNAPSHOT_SQL[table]).fetchall()
                out[table] = sorted(tuple(r) for r in rows)
        finally:
            conn.close()
        return out
    with psycopg.connect(database_url) as pg:
        for table in TABLES:
            rows = pg.execute(SNAPSHOT_SQL[table]).fetchall()
            out[table] = sorted(tuple(r) for r in rows)
    return out


def query(database_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one read query with `?` parameters on either database."""
    if database_url.startswith("sqlite:///"):
        conn = sqlite3.connect(database_url[len("sqlite:///") :])
        try:
            return [tuple(r) for r in conn.execute(sql, params).fetchall()]
        finally:
            conn.close()
    with psycopg.connect(database_url) as pg:
        return [tuple(r) for r in pg.execute(sql.replace("?", "%s"), params).fetchall()]


def execute(database_url: str, sql: str, *params: Any) -> None:
    """Run one write with `?` parameters on either database, committed."""
    execute_many(database_url, sql, [params])


def execute_many(database_url: str, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run one write statement (`?` parameters) once per row on either database, committed."""
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


@contextmanager
def api_client(
    database_url: str, world: dict[str, Any] | None = None, **settings: Any
) -> Iterator[Any]:
    """A test client on the real app over `database_url`, after loading `world` into it."""
    from starlette.testclient import TestClient

    from cbstop.app import create_app
    from cbstop.world.loader import load_world

    if world is not None:
        load_world(database_url, world, key_secret=TEST_KEY_SECRET)
    app = create_app(make_settings(database_url, **settings))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def bearer(secret: str) -> dict[str, str]:
    """The Authorization header for a key."""
    return {"Authorization": f"Bearer {secret}"}
