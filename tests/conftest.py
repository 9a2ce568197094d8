"""Fixtures: every database test runs once on SQLite and once on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import IN_CI, DatabaseMaker, postgres_unavailable_reason

DIALECTS = ["sqlite", "postgresql"]
_pg_reason: list[str | None] = []


def _require_postgres() -> None:
    if not _pg_reason:
        _pg_reason.append(postgres_unavailable_reason())
    reason = _pg_reason[0]
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI=true needs PostgreSQL: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def database_maker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseMaker]:
    maker = DatabaseMaker(tmp_path_factory.mktemp("databases"))
    yield maker
    maker.close()


@pytest.fixture(params=DIALECTS)
def dialect(request: pytest.FixtureRequest) -> str:
    """The database kind of this run of the test."""
    name: str = request.param
    if name == "postgresql":
        _require_postgres()
    return name


@pytest.fixture
def postgres() -> None:
    """For tests that only make sense on PostgreSQL."""
    _require_postgres()


@pytest.fixture
def database_url(dialect: str, database_maker: DatabaseMaker) -> Iterator[str]:
    """A fresh, migrated database of this run's dialect, dropped after the test."""
    with database_maker.database(dialect) as url:
        yield url


@pytest.fixture
def empty_database_url(dialect: str, database_maker: DatabaseMaker) -> Iterator[str]:
    """A fresh database with no tables at all."""
    with database_maker.database(dialect, migrated=False) as url:
        yield url


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture
def postgres_url(database_maker: DatabaseMaker) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database, for tests of PostgreSQL-only parts."""
    _require_postgres()
    with database_maker.database("postgresql") as url:
        yield url
