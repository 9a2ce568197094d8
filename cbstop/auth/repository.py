"""The one query authentication needs: a key, its owner and its scope, by hash."""

from __future__ import annotations

from dataclasses import dataclass

from cbstop.db.database import Connection

_FIND = """
SELECT k.id, k.organisation_id, k.partner_group_id, k.abilities, k.revoked, k.key_hash,
       g.partner_id, g.is_admin
FROM api_keys k
LEFT JOIN partner_groups g ON g.id = k.partner_group_id
WHERE k.key_hash = $1
"""


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


async def find_key(conn: Connection, key_hash: str) -> KeyRecord | None:
    """The key stored under this hash, if any."""
    row = await conn.fetchrow(_FIND, key_hash)
    if row is None:
        return None
    return KeyRecord(
        id=row[0],
        organisation_id=row[1],
        partner_group_id=row[2],
        abilities=row[3],
        revoked=bool(row[4]),
        key_hash=row[5],
        partner_id=row[6],
        is_admin=bool(row[7]),
    )
