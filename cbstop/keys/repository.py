"""The SQL of key management: owners exist, keys inserted, revoked and listed, and which
secrets the live keys were hashed with."""

from __future__ import annotations

from dataclasses import dataclass

from cbstop.db.database import Connection


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A key as `cbstop keys list` shows it: never its secret, nor its hash."""

    id: str
    organisation_id: str | None
    partner_group_id: str | None
    abilities: str
    created_at: int
    revoked_at: int | None
    expires_at: int | None = None
    last_used_at: int | None = None
    secret_fingerprint: str | None = None


async def organisation_exists(conn: Connection, organisation_id: str) -> bool:
    """Whether the organisation exists."""
    row = await conn.fetchrow("SELECT 1 FROM organisations WHERE id = $1", organisation_id)
    return row is not None


async def partner_group_exists(conn: Connection, partner_group_id: str) -> bool:
    """Whether the partner group exists."""
    row = await conn.fetchrow("SELECT 1 FROM partner_groups WHERE id = $1", partner_group_id)
    return row is not None


async def missing_owner(
    conn: Connection, organisation_id: str | None, partner_group_id: str | None
) -> str | None:
    """What is missing of an owner (an organisation, or else a partner group) for a key or a
    webhook endpoint, in an operator's words; None if it exists."""
    if organisation_id is not None:
        if not await organisation_exists(conn, organisation_id):
            return f"organisation {organisation_id} does not exist"
    elif partner_group_id is not None and not await partner_group_exists(conn, partner_group_id):
        return f"partner group {partner_group_id} does not exist"
    return None


async def insert_key(
    conn: Connection,
    *,
    key_id: str,
    key_hash: str,
    secret_fingerprint: str,
    organisation_id: str | None,
    partner_group_id: str | None,
    abilities: str,
    created_at: int,
    expires_at: int | None,
) -> None:
    """Store a new key (its hash only, and the fingerprint of the secret that made it)."""
    await conn.execute(
        "INSERT INTO api_keys (id, key_hash, secret_fingerprint, organisation_id, "
        "partner_group_id, abilities, revoked, revoked_at, created_at, expires_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9)",
        key_id,
        key_hash,
        secret_fingerprint,
        organisation_id,
        partner_group_id,
        abilities,
        False,
        created_at,
        expires_at,
    )


async def revoke_key(conn: Connection, key_id: str, revoked_at: int) -> bool:
    """Mark the key revoked (a revoked key keeps its first revocation time); False if unknown."""
    row = await conn.fetchrow(
        "UPDATE api_keys SET revoked = $2, revoked_at = COALESCE(revoked_at, $3) "
        "WHERE id = $1 RETURNING id",
        key_id,
        True,
        revoked_at,
    )
    return row is not None


async def list_keys(conn: Connection) -> list[StoredKey]:
    """Every key, oldest first."""
    rows = await conn.fetch(
        "SELECT id, organisation_id, partner_group_id, abilities, created_at, revoked_at, "
        "expires_at, last_used_at, secret_fingerprint FROM api_keys ORDER BY created_at, id"
    )
    return [StoredKey(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8]) for r in rows]


async def live_keys_per_secret(conn: Connection, now: int) -> dict[str | None, int]:
    """How many keys that can still authenticate (not revoked, not expired at `now`) are
    stored under each secret fingerprint; None counts keys stored before fingerprints."""
    rows = await conn.fetch(
        "SELECT secret_fingerprint, count(*) FROM api_keys "
        "WHERE NOT revoked AND (expires_at IS NULL OR expires_at > $1) "
        "GROUP BY secret_fingerprint",
        now,
    )
    return {r[0]: int(r[1]) for r in rows}
