"""Key management for operators: create (the plaintext is returned once), revoke, list.

Each function is one unit of work on the database it is given; the caller owns the database.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from cbstop.auth.keys import (
    ABILITIES,
    DEFAULT_ABILITIES,
    decode_abilities,
    encode_abilities,
    generate_key,
    generate_key_id,
    hash_key,
)
from cbstop.db.database import Database
from cbstop.keys import repository

OwnerKind = Literal["organisation", "partner_group"]


class KeyManagementError(Exception):
    """A key operation that cannot be done; the message is one line for an operator."""


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What an operator may see of a key."""

    id: str
    owner_kind: OwnerKind
    owner_id: str
    abilities: frozenset[str]
    created_at: int
    revoked_at: int | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key with its plaintext, which exists nowhere else: show it once."""

    info: KeyInfo
    secret: str


def _now() -> int:
    return time.time_ns() // 1000


async def create_key(
    db: Database,
    key_secret: str,
    *,
    organisation_id: str | None = None,
    partner_group_id: str | None = None,
    abilities: Iterable[str] | None = None,
) -> CreatedKey:
    """A new key for an existing organisation or partner group (not both)."""
    if (organisation_id is None) == (partner_group_id is None):
        raise KeyManagementError("give exactly one of an organisation and a partner group")
    chosen = DEFAULT_ABILITIES if abilities is None else frozenset(abilities)
    unknown = sorted(chosen - DEFAULT_ABILITIES)
    if unknown:
        raise KeyManagementError(
            f"unknown ability {unknown[0]!r}: choose from {', '.join(ABILITIES)}"
        )
    if not chosen:
        raise KeyManagementError(f"give at least one ability: {', '.join(ABILITIES)}")
    secret = generate_key()
    info = KeyInfo(
        id=generate_key_id(),
        owner_kind="organisation" if organisation_id is not None else "partner_group",
        owner_id=organisation_id or partner_group_id or "",
        abilities=chosen,
        created_at=_now(),
        revoked_at=None,
    )
    async with db.transaction(write=True) as conn:
        if organisation_id is not None:
            if not await repository.organisation_exists(conn, organisation_id):
                raise KeyManagementError(f"organisation {organisation_id} does not exist")
        elif partner_group_id is not None and not await repository.partner_group_exists(
            conn, partner_group_id
        ):
            raise KeyManagementError(f"partner group {partner_group_id} does not exist")
        await repository.insert_key(
            conn,
            key_id=info.id,
            key_hash=hash_key(key_secret, secret),
            organisation_id=organisation_id,
            partner_group_id=partner_group_id,
            abilities=encode_abilities(chosen),
            created_at=info.created_at,
        )
    return CreatedKey(info, secret)


async def revoke_key(db: Database, key_id: str) -> None:
    """Revoke a key; revoking a revoked key changes nothing."""
    async with db.transaction(write=True) as conn:
        if not await repository.revoke_key(conn, key_id, _now()):
            raise KeyManagementError(f"key {key_id} does not exist")


async def list_keys(db: Database) -> list[KeyInfo]:
    """Every key, oldest first, without secrets."""
    async with db.transaction() as conn:
        stored = await repository.list_keys(conn)
    return [
        KeyInfo(
            id=k.id,
            owner_kind="organisation" if k.organisation_id is not None else "partner_group",
            owner_id=k.organisation_id or k.partner_group_id or "",
            abilities=decode_abilities(k.abilities),
            created_at=k.created_at,
            revoked_at=k.revoked_at,
        )
        for k in stored
    ]
