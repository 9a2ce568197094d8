"""The queries authentication needs: a key, its owner and its scope, by hash; and the two
background writes of key upkeep (re-hashing with the newest secret, the last use)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from cbstop.db.database import Connection

# Every configured secret's hash of the presented key in one lookup: one statement per
# dialect (PostgreSQL takes the hashes as one text[], SQLite as one JSON array); both use the
# unique index on key_hash.
_FIND_POSTGRESQL = """
SELECT k.id, k.organisation_id, k.partner_group_id, k.abilities, k.revoked, k.key_hash,
       g.partner_id, g.is_admin, k.secret_fingerprint, k.expires_at
FROM api_keys k
LEFT JOIN partner_groups g ON g.id = k.partner_group_id
WHERE k.key_hash = ANY($1::text[])
"""
_FIND_SQLITE = """
SELECT k.id, k.organisation_id, k.partner_group_id, k.abilities, k.revoked, k.key_hash,
       g.partner_id, g.is_admin, k.secret_fingerprint, k.expires_at
FROM api_keys k
LEFT JOIN partner_groups g ON g.id = k.partner_group_id
WHERE k.key_hash IN (SELECT value FROM json_each($1))
"""
# Guarded by the hash it replaces: a key another process re-hashed meanwhile (or re-hashed
# the other way during a rolling restart) is left as that process wrote it.
_REHASH = (
    "UPDATE api_keys SET key_hash = $3, secret_fingerprint = $4 WHERE id = $1 AND key_hash = $2"
)
# Never moves a key's last use backwards (another process may have written a later minute).
_LAST_USED = (
    "UPDATE api_keys SET last_used_at = $2 "
    "WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)"
)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A stored key, with its partner group's scope when it has one."""

    id: str
    organisation_id: str | None
    partner_group_id: str | None
    abilities: str
    revoked: bool
    key_hash: str
    partner_id: str | None
    is_admin: bool
    secret_fingerprint: str | None = None
    expires_at: int | None = None


@dataclass(frozen=True, slots=True)
class Rehash:
    """Store key `key_id` under `new_hash` (made with the secret `fingerprint` names) if it is
    still stored under `old_hash`."""

    key_id: str
    old_hash: str
    new_hash: str
    fingerprint: str


async def find_keys(conn: Connection, key_hashes: Sequence[str]) -> list[KeyRecord]:
    """The keys stored under any of these hashes (one, almost always; none for a stranger)."""
    if conn.dialect == "postgresql":
        rows = await conn.fetch(_FIND_POSTGRESQL, list(key_hashes))
    else:
        rows = await conn.fetch(_FIND_SQLITE, json.dumps(list(key_hashes)))
    return [
        KeyRecord(
            id=row[0],
            organisation_id=row[1],
            partner_group_id=row[2],
            abilities=row[3],
            revoked=bool(row[4]),
            key_hash=row[5],
            partner_id=row[6],
            is_admin=bool(row[7]),
            secret_fingerprint=row[8],
            expires_at=row[9],
        )
        for row in rows
    ]


async def find_key(conn: Connection, key_hash: str) -> KeyRecord | None:
    """The key stored under this hash, if any."""
    found = await find_keys(conn, [key_hash])
    return found[0] if found else None


async def rehash_keys(conn: Connection, changes: Sequence[Rehash]) -> None:
    """Move keys to the hashes of the newest secret (each only if still where it was)."""
    await conn.executemany(
        _REHASH, [(c.key_id, c.old_hash, c.new_hash, c.fingerprint) for c in changes]
    )


async def record_last_use(conn: Connection, last_used: Sequence[tuple[str, int]]) -> None:
    """Write (key id, minute of last use in microseconds) pairs, never moving one back."""
    await conn.executemany(_LAST_USED, list(last_used))
