"""Migrations: build the schema the code declares, on both databases, once, safely."""

from __future__ import annotations

from cbstop.db.migrate import current_revision, migrate
from tests.cli.run import start_cbstop
from tests.db.schema import schema_differences
from tests.support import TABLES, query, snapshot

HEAD = "0006"  # the newest migration


def test_migrations_build_every_table_from_an_empty_database(empty_database_url: str) -> None:
    assert current_revision(empty_database_url) is None
    migrate(empty_database_url)
    assert current_revision(empty_database_url) == HEAD
    assert snapshot(empty_database_url) == {table: [] for table in TABLES}


def test_migrated_schema_matches_the_declared_metadata(empty_database_url: str) -> None:
    migrate(empty_database_url)
    assert schema_differences(empty_database_url) == []


def test_migrating_a_migrated_database_changes_nothing(database_url: str) -> None:
    before = snapshot(database_url)
    migrate(database_url)
    assert current_revision(database_url) == HEAD
    assert snapshot(database_url) == before
    assert schema_differences(database_url) == []


def test_several_processes_migrating_at_once_all_succeed_once(empty_database_url: str) -> None:
    processes = [start_cbstop("migrate", "--database-url", empty_database_url) for _ in range(4)]
    results = [(p.wait(timeout=120), p.communicate()) for p in processes]
    assert [code for code, _ in results] == [0, 0, 0, 0], results
    assert all(err == "" for _, (_, err) in results), results
    assert query(empty_database_url, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    assert schema_differences(empty_database_url) == []
