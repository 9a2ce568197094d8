"""Service settings: one object, built once and passed into `create_app`."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./cbstop.db"
PLACEHOLDER_KEY_SECRET = "cbstop-development-secret-change-me"  # noqa: S105 - a known placeholder


class Settings(BaseSettings):
    """Everything the service reads from its environment (prefix `CBSTOP_`)."""

    model_config = SettingsConfigDict(env_prefix="CBSTOP_", extra="ignore", frozen=True)

    database_url: str = DEFAULT_DATABASE_URL
    # Keys are stored as HMAC-SHA256(key_secret, key): a leaked table is useless without it.
    key_secret: str = PLACEHOLDER_KEY_SECRET
    # Production mode refuses to start with the placeholder secret.
    production: bool = False
    pool_max_size: int = Field(default=10, ge=1)
    # Seconds a PostgreSQL connection lives: its cached plans are re-made against the tables'
    # current sizes at least this often.
    pool_max_lifetime: float = Field(default=30.0, gt=0)
    # How long a request may wait for a free connection before it gets 503.
    pool_timeout: float = Field(default=1.0, gt=0)
    # Server-side limit on one statement; past it the request gets 503.
    statement_timeout: float = Field(default=1.5, gt=0)
    # How long a resolved key is trusted before it is looked up again (revocation bound).
    key_cache_ttl: float = Field(default=0.5, ge=0)
    # Seconds a SIGTERM'd process lets requests in flight finish.
    drain_timeout: float = Field(default=10.0, ge=0)
    # One JSON line per request on stderr.
    access_log: bool = True
    # Seconds a client has to send a request's line and headers, from the connection's opening
    # (or the request's first byte on a kept-alive one); past it the connection is closed.
    header_timeout: float = Field(default=10.0, gt=0)
    # Seconds a request body may go without a byte arriving before the connection is closed.
    body_timeout: float = Field(default=10.0, gt=0)
    # Connections one worker serves; a request on one past it gets 503 and the connection closes.
    max_connections: int = Field(default=1000, ge=1)
    # Seconds an Idempotency-Key's answer is kept; past it the key counts as new (CONTRACT 3.1).
    idempotency_ttl: float = Field(default=86400.0, gt=0)
    # Seconds between two sweeps that delete expired keys' answers (each process sweeps).
    idempotency_purge_interval: float = Field(default=60.0, gt=0)
    # Stored answers each process keeps in memory, for retries that reach it (0: none).
    idempotency_cache_size: int = Field(default=10_000, ge=0)

    @property
    def is_postgres(self) -> bool:
        """Whether the database URL selects PostgreSQL."""
        return self.database_url.startswith(("postgresql://", "postgres://"))
