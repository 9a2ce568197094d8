"""Apply pending migrations, once, however many processes start at the same moment.

On PostgreSQL the migration runs under a session advisory lock; on SQLite under an
exclusive lock on a file beside the database. The second process waits, then finds
nothing left to do.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection

from cbstop.db.database import sqlite_path

MIGRATIONS = Path(__file__).parent / "migrations"
# Any fixed number, the same in every process: the key of the migration advisory lock.
ADVISORY_LOCK_KEY = 0x63627374


def sqlalchemy_url(url: str) -> str:
    """The SQLAlchemy URL for a cbstop database URL (psycopg for PostgreSQL)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    return "sqlite:///" + sqlite_path(url)


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def migrate(url: str) -> None:
    """Bring the database at `url` up to the newest revision."""
    engine = create_engine(sqlalchemy_url(url), poolclass=None)
    try:
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
                conn.commit()
                try:
                    command.upgrade(_alembic_config(conn), "head")
                    conn.commit()
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY})
                    conn.commit()
        else:
            path = Path(sqlite_path(url))
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(f"{path}.migrate-lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                with engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA journal_mode=WAL")
                    command.upgrade(_alembic_config(conn), "head")
                    conn.commit()
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    """The revision the database is at (None before the first migration)."""
    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.connect() as conn:
            from alembic.runtime.migration import MigrationContext

            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
