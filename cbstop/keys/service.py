"""Key management for operators: create (the plaintext is returned once), revoke, list, and
the check that the configured key secrets match the stored keys.

Each function is one unit of work on the database it is given; the caller owns the database.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
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
    secret_fingerprint,
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
    expires_at: int | None = None
    last_used_at: int | None = None  # to the minute
    secret_fingerprint: str | None = None  # None: stored before fingerprints, not used since

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


_DURATION = re.compile(r"([1-9][0-9]{0,8})([dhms])")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> int:
    """Seconds in a duration such as `90d`, `12h`, `30m` or `45s` (a whole positive number and
    one unit); ValueError for anything else."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration: a whole number and d, h, m or s, like 90d, 12h, 30m, 45s"
        )
    return int(match[1]) * _UNIT_SECONDS[match[2]]


class KeySecretMismatch(KeyManagementError):
    """None of the configured key secrets is one the stored keys were hashed with."""


@dataclass(frozen=True, slots=True)
class SecretUse:
    """How many live keys (not revoked, not expired) are stored under one secret."""

    fingerprint: str | None  # None: keys stored before fingerprints, not used since
    position: int | None  # 1-based place in CBSTOP_KEY_SECRET; None: not configured
    keys: int


async def keys_per_secret(db: Database, secrets: Sequence[str]) -> list[SecretUse]:
    """Live keys per secret: every configured secret (newest first, even with no key), then
    fingerprints no configured secret has, then keys with no fingerprint yet."""
    async with db.connection() as conn:
        counts = await repository.live_keys_per_secret(conn, _now())
    fingerprints = [secret_fingerprint(s) for s in secrets]
    uses = [SecretUse(fp, i + 1, counts.pop(fp, 0)) for i, fp in enumerate(fingerprints)]
    unknown = counts.pop(None, 0)
    uses += [SecretUse(fp, None, n) for fp, n in sorted(counts.items(), key=lambda c: str(c[0]))]
    if unknown:
        uses.append(SecretUse(None, None, unknown))
    return uses


async def check_key_secrets(db: Database, secrets: Sequence[str]) -> None:
    """Raise `KeySecretMismatch` when live keys exist and none of the configured secrets is
    one they were hashed with (by the stored fingerprints; CONTRACT 3.6).

    Keys stored before fingerprints existed (migration 0004) are not counted: nothing says
    which secret made them until their first use fills the fingerprint in. Revoked and expired
    keys are not counted either: they can never authenticate again, so they never move to a
    new secret and must not hold one back.
    """
    uses = await keys_per_secret(db, secrets)
    if any(u.position is not None and u.keys for u in uses):
        return
    stored = [u for u in uses if u.position is None and u.fingerprint is not None]
    if not stored:
        return
    theirs = ", ".join(u.fingerprint or "" for u in stored)
    ours = ", ".join(secret_fingerprint(s) for s in secrets) or "none"
    count = sum(u.keys for u in stored)
    keys = f"{count} live key{'s were' if count != 1 else ' was'}"
    made_with = "a secret of fingerprint" if len(stored) == 1 else "secrets of fingerprints"
    raise KeySecretMismatch(
        f"CBSTOP_KEY_SECRET does not match the stored keys: {keys} hashed with {made_with} "
        f"{theirs}, the configured secrets have {ours}; set the secret the keys were made with "
        "(docs/production.md, 'Rotating the key secret')"
    )


async def create_key(
    db: Database,
    key_secret: str,
    *,
    organisation_id: str | None = None,
    partner_group_id: str | None = None,
    abilities: Iterable[str] | None = None,
    expires_in: int | None = None,
) -> CreatedKey:
    """A new key for an existing organisation or partner group (not both), hashed with
    `key_secret` (the newest); it expires `expires_in` seconds from now, or never."""
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
    if expires_in is not None and expires_in <= 0:
        raise KeyManagementError("a key must expire after it is created")
    secret = generate_key()
    fingerprint = secret_fingerprint(key_secret)
    created_at = _now()
    info = KeyInfo(
        id=generate_key_id(),
        owner_kind="organisation" if organisation_id is not None else "partner_group",
        owner_id=organisation_id or partner_group_id or "",
        abilities=chosen,
        created_at=created_at,
        revoked_at=None,
        expires_at=None if expires_in is None else created_at + expires_in * 1_000_000,
        secret_fingerprint=fingerprint,
    )
    async with db.transaction(write=True) as conn:
        missing = await repository.missing_owner(conn, organisation_id, partner_group_id)
        if missing is not None:
            raise KeyManagementError(missing)
        await repository.insert_key(
            conn,
            key_id=info.id,
            key_hash=hash_key(key_secret, secret),
            secret_fingerprint=fingerprint,
            organisation_id=organisation_id,
            partner_group_id=partner_group_id,
            abilities=encode_abilities(chosen),
            created_at=info.created_at,
            expires_at=info.expires_at,
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
            expires_at=k.expires_at,
            last_used_at=k.last_used_at,
            secret_fingerprint=k.secret_fingerprint,
        )
        for k in stored
    ]
