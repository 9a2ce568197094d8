"""Service settings: one object, built once and passed into `create_app`.

Read from `CBSTOP_*` environment variables, then from a `.env` file in the working directory
(`.env.example` lists every setting); a variable in the environment wins over the file.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cbstop.ratelimit.policy import parse_limit


def parse_schedule(text: str) -> tuple[float, ...]:
    """`5,60,300`: seconds before each retry, each a positive number (none: never retry)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    delays: list[float] = []
    for part in parts:
        try:
            delay = float(part)
        except ValueError:
            delay = -1.0
        if not 0 < delay <= 30 * 86400:
            raise ValueError(
                f"{part!r} is not a delay: seconds before each retry, comma-separated, "
                "each above 0 and at most 30 days, like 5,60,300"
            )
        delays.append(delay)
    return tuple(delays)


DEFAULT_DATABASE_URL = "sqlite:///./cbstop.db"
PLACEHOLDER_KEY_SECRET = "cbstop-development-secret-change-me"  # noqa: S105 - a known placeholder


class Settings(BaseSettings):
    """Everything the service reads from its environment (prefix `CBSTOP_`)."""

    model_config = SettingsConfigDict(
        env_prefix="CBSTOP_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    database_url: str = DEFAULT_DATABASE_URL
    # Keys are stored as HMAC-SHA256(secret, key): a leaked table is useless without it.
    # Several secrets, newest first, separated by commas, rotate it (CONTRACT 3.6).
    key_secret: SecretStr = SecretStr(PLACEHOLDER_KEY_SECRET)
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
    # Whether /healthz, /readyz and /metrics get access lines too (false: left out).
    access_log_probes: bool = True
    # The least severe of the server's own messages that is written (access lines aside).
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    # Seconds an idle kept-alive connection stays open: above the usual load balancer's idle
    # timeout (60 s), so the balancer, not the server, closes it and never reuses a closed one.
    keep_alive_timeout: float = Field(default=65.0, gt=0)
    # Trust X-Forwarded-For/-Proto from `forwarded_allow_ips` (a reverse proxy's addresses,
    # comma-separated, or "*"): the client address logged is then the proxy's client.
    proxy_headers: bool = False
    forwarded_allow_ips: str = "127.0.0.1"
    # Seconds between two writes of keys' last use (kept to the minute, off the request path).
    key_last_used_interval: float = Field(default=60.0, gt=0)
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
    # Requests per owner per operation: "<quota>/<window seconds>" (GCRA), or "off" (CONTRACT 3.3).
    rate_limit: str = "100/60"
    # Failed authentications per client address before its requests get 429, or "off".
    auth_failure_limit: str = "20/60"
    # Where the rate limits' counters live for every worker and instance (redis://host:port/db);
    # empty: in each process.
    redis_url: str = ""
    # Seconds a Redis round trip may take before requests are served without limits.
    redis_timeout: float = Field(default=0.25, gt=0)
    # The prefix (and Redis Cluster hash tag) of every key cbstop writes to Redis.
    redis_prefix: str = Field(default="cbstop", min_length=1, max_length=64, pattern=r"^[^{}\s]+$")
    # API requests one worker runs at once; past it a request gets 503 at once (0: no limit).
    max_in_flight: int = Field(default=128, ge=0)
    # Days an event is kept (CONTRACT 3.4); older ones are purged in the background.
    event_retention_days: float = Field(default=30.0, gt=0)
    # Seconds between two sweeps that delete events (and webhook attempts) past the retention.
    event_purge_interval: float = Field(default=300.0, gt=0)
    # Seconds between two looks for events to number and webhooks to deliver that another
    # process wrote (a process's own writes wake it at once).
    event_poll_interval: float = Field(default=0.2, gt=0)
    # Seconds a webhook endpoint has to answer an attempt (CONTRACT 3.5).
    webhook_timeout: float = Field(default=10.0, gt=0)
    # Seconds before each retry of a failed delivery, comma-separated: after the last, the
    # delivery is given up. The default spreads 11 retries over about 2.8 days.
    webhook_retry_schedule: str = "5,60,300,1800,3600,7200,14400,28800,43200,57600,86400"
    # Webhook attempts one process makes at once.
    webhook_concurrency: int = Field(default=16, ge=1)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                "expected redis://host:port/db, rediss://... (TLS) or unix:///path, or nothing"
            )
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        return value

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        parse_schedule(value)  # raises ValueError with the reason
        return value

    @field_validator("rate_limit", "auth_failure_limit")
    @classmethod
    def _policy(cls, value: str) -> str:
        parse_limit(value)  # raises ValueError with the reason
        return value.strip().lower()

    @property
    def webhook_retry_delays(self) -> tuple[float, ...]:
        """Seconds before each retry of a failed webhook delivery."""
        return parse_schedule(self.webhook_retry_schedule)

    @property
    def key_secrets(self) -> tuple[str, ...]:
        """The configured key secrets, newest first."""
        parts = (p.strip() for p in self.key_secret.get_secret_value().split(","))
        return tuple(p for p in parts if p)

    def to_json(self) -> str:
        """Every field, secrets revealed, for `Settings.model_validate_json` in a worker."""
        values: dict[str, Any] = self.model_dump()
        for name, value in values.items():
            if isinstance(value, SecretStr):
                values[name] = value.get_secret_value()
        return orjson.dumps(values).decode()

    @property
    def is_postgres(self) -> bool:
        """Whether the database URL selects PostgreSQL."""
        return self.database_url.startswith(("postgresql://", "postgres://"))
