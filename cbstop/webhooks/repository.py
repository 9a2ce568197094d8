"""The SQL of the operator's webhook commands: endpoints added, listed and removed (with their
deliveries and attempts), and the most recent attempts with their delivery's state."""

from __future__ import annotations

from dataclasses import dataclass

from cbstop.db.database import Connection


@dataclass(frozen=True, slots=True)
class StoredEndpoint:
    """An endpoint as `cbstop webhooks list` shows it: never its secret."""

    id: str
    organisation_id: str | None
    partner_group_id: str | None
    url: str
    event_types: str  # sorted, space-separated; '' for every type
    status: str
    disabled_reason: str | None
    created_at: int


@dataclass(frozen=True, slots=True)
class StoredAttempt:
    """One attempt, with the state of its delivery now (None: the delivery was purged)."""

    endpoint_id: str
    event_id: str
    attempt: int
    started_at: int
    duration_us: int
    status_code: int | None
    error: str | None
    state: str | None
    next_attempt_at: int | None


async def insert_endpoint(
    conn: Connection,
    *,
    endpoint_id: str,
    organisation_id: str | None,
    partner_group_id: str | None,
    url: str,
    secret: str,
    event_types: str,
    created_at: int,
) -> None:
    """Store a new, enabled endpoint."""
    await conn.execute(
        "INSERT INTO webhook_endpoints (id, organisation_id, partner_group_id, url, secret, "
        "event_types, status, disabled_reason, created_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, 'enabled', NULL, $7)",
        endpoint_id,
        organisation_id,
        partner_group_id,
        url,
        secret,
        event_types,
        created_at,
    )


async def endpoint_exists(conn: Connection, endpoint_id: str) -> bool:
    """Whether the endpoint exists."""
    row = await conn.fetchrow("SELECT 1 FROM webhook_endpoints WHERE id = $1", endpoint_id)
    return row is not None


async def list_endpoints(conn: Connection) -> list[StoredEndpoint]:
    """Every endpoint, oldest first."""
    rows = await conn.fetch(
        "SELECT id, organisation_id, partner_group_id, url, event_types, status, "
        "disabled_reason, created_at FROM webhook_endpoints ORDER BY created_at, id"
    )
    return [StoredEndpoint(*(r[i] for i in range(8))) for r in rows]


# On PostgreSQL the fan-out inserts deliveries under event_log's row lock (events/sequencer.py);
# taking it first means no delivery for the endpoint can be added between the deletes below,
# which would otherwise make the endpoint's DELETE fail on the delivery's foreign key.
LOCK_FAN_OUT_POSTGRES = "SELECT 1 FROM event_log WHERE id = 1 FOR UPDATE"
LOCK_ENDPOINT_POSTGRES = "SELECT 1 FROM webhook_endpoints WHERE id = $1 FOR UPDATE"


async def delete_endpoint(conn: Connection, endpoint_id: str) -> bool:
    """Delete the endpoint, its deliveries and their attempts; False if it does not exist."""
    if conn.dialect == "postgresql":
        await conn.execute(LOCK_FAN_OUT_POSTGRES)
        # And the endpoint's row: an attempt being recorded for it (delivery.py locks the
        # row to share before its insert) finishes first, or waits and finds it gone.
        await conn.execute(LOCK_ENDPOINT_POSTGRES, endpoint_id)
    # Attempts and deliveries refer to the endpoint: they go first.
    await conn.execute("DELETE FROM webhook_attempts WHERE endpoint_id = $1", endpoint_id)
    await conn.execute("DELETE FROM webhook_deliveries WHERE endpoint_id = $1", endpoint_id)
    row = await conn.fetchrow(
        "DELETE FROM webhook_endpoints WHERE id = $1 RETURNING id", endpoint_id
    )
    return row is not None


async def enable_endpoint(conn: Connection, endpoint_id: str) -> str | None:
    """Enable the endpoint (its disabled reason forgotten), inside the caller's write unit of
    work; its status before, or None if it does not exist."""
    before = await conn.fetchval("SELECT status FROM webhook_endpoints WHERE id = $1", endpoint_id)
    if before is not None:
        await conn.execute(
            "UPDATE webhook_endpoints SET status = 'enabled', disabled_reason = NULL WHERE id = $1",
            endpoint_id,
        )
    return None if before is None else str(before)


# $1 the number of attempts. A LEFT JOIN: retention may purge a delivery before its attempts.
RECENT_ATTEMPTS = """
SELECT a.endpoint_id, a.event_id, a.attempt, a.started_at, a.duration_us, a.status_code,
       a.error, d.state, d.next_attempt_at
FROM webhook_attempts a
LEFT JOIN webhook_deliveries d ON d.endpoint_id = a.endpoint_id AND d.event_id = a.event_id
ORDER BY a.started_at DESC, a.attempt DESC, a.endpoint_id, a.event_id
LIMIT $1
"""
# $1 the endpoint, $2 the number of attempts.
RECENT_ATTEMPTS_OF_ENDPOINT = """
SELECT a.endpoint_id, a.event_id, a.attempt, a.started_at, a.duration_us, a.status_code,
       a.error, d.state, d.next_attempt_at
FROM webhook_attempts a
LEFT JOIN webhook_deliveries d ON d.endpoint_id = a.endpoint_id AND d.event_id = a.event_id
WHERE a.endpoint_id = $1
ORDER BY a.started_at DESC, a.attempt DESC, a.endpoint_id, a.event_id
LIMIT $2
"""


async def recent_attempts(
    conn: Connection, endpoint_id: str | None, limit: int
) -> list[StoredAttempt]:
    """The `limit` most recent attempts, newest first; only `endpoint_id`'s unless None."""
    if endpoint_id is None:
        rows = await conn.fetch(RECENT_ATTEMPTS, limit)
    else:
        rows = await conn.fetch(RECENT_ATTEMPTS_OF_ENDPOINT, endpoint_id, limit)
    return [StoredAttempt(*(r[i] for i in range(9))) for r in rows]
