"""Who is calling: an `Authorization` header to a `Principal`, or `Unauthorised`.

Resolved keys are cached for `key_cache_ttl` seconds (0.5 s by default), so the hot path
costs no round trip of its own while a revoked key still stops working within 1 s on
every instance; an expired key stops at its expiry, cached or not. The cache is keyed by a
BLAKE2b of the key under a random key of the process's own, not by the stored HMAC: a hot
key costs one 0.8 us digest instead of one 2.9 us HMAC per secret, and the process keeps no
key in the clear nor anything that could be checked against the table's hashes. Unknown,
malformed, revoked and expired keys take the same path — the digest, then on a miss one HMAC
per configured secret and one lookup of all those hashes — and get the same answer.

With several secrets (newest first, CONTRACT 3.6) a key stored under an older secret's hash
still authenticates, and is queued to be re-hashed with the newest (`upkeep.py` writes it in
the background); so is a key stored before fingerprints existed, to get its fingerprint.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets as random_bytes
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cbstop.auth import repository
from cbstop.auth.keys import decode_abilities, hash_key, is_key_shaped, secret_fingerprint
from cbstop.auth.upkeep import KeyUpkeep
from cbstop.db.database import Database
from cbstop.db.scope import Scope, ScopeKind
from cbstop.errors import Forbidden, Unauthorised

# Keys remembered at most; past it the cache starts again (a flood of junk keys cannot grow it).
CACHE_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated key: who owns it, what it may do, and what it can see (`scope`)."""

    key_id: str
    owner: str
    abilities: frozenset[str]
    scope: Scope

    @property
    def scope_kind(self) -> ScopeKind:
        return self.scope.kind

    @property
    def scope_id(self) -> str:
        return self.scope.id

    def require(self, ability: str) -> None:
        """Raise `Forbidden` unless the key has the ability."""
        if ability not in self.abilities:
            raise Forbidden()


def principal_of(record: repository.KeyRecord) -> Principal:
    """The principal a stored key stands for."""
    abilities = decode_abilities(record.abilities)
    if record.organisation_id is not None:
        return Principal(
            record.id,
            f"organisation:{record.organisation_id}",
            abilities,
            Scope("organisation", record.organisation_id),
        )
    group = record.partner_group_id or ""
    owner = f"partner_group:{group}"
    if record.is_admin and record.partner_id is not None:
        return Principal(record.id, owner, abilities, Scope("partner", record.partner_id))
    return Principal(record.id, owner, abilities, Scope("group", group))


def bearer_token(header: str | None) -> str | None:
    """The key in `Authorization: Bearer <key>`, exactly as sent, or None.

    The scheme word is case-insensitive and followed by one or more spaces (RFC 7235's
    `1*SP`); only the field's surrounding spaces and tabs are trimmed (RFC 9110 5.5). Nothing
    else is whitespace: a key with any byte after it (0xA0, 0x85, a tab, ...) is not the key,
    and the key itself must look like one (`is_key_shaped`). See docs/decisions.md.
    """
    if not header:
        return None
    scheme, _, token = header.strip(" \t").partition(" ")
    token = token.lstrip(" ")
    if scheme.lower() != "bearer" or not is_key_shaped(token):
        return None
    return token


@dataclass(frozen=True, slots=True)
class _Resolved:
    """A cache entry: trusted until `until` (monotonic), the key's principal (None: refused)
    and its expiry (microseconds since the epoch, None: never)."""

    until: float
    principal: Principal | None
    expires_at: int | None


class Authenticator:
    """Resolves keys, with a short-lived per-process cache."""

    def __init__(self, db: Database, secrets: Sequence[str], ttl: float, upkeep: KeyUpkeep) -> None:
        if not secrets:
            raise ValueError("no key secret configured")
        self._db = db
        self._secrets = tuple(secrets)
        self._fingerprints = tuple(secret_fingerprint(s) for s in self._secrets)
        self._ttl = ttl
        self._upkeep = upkeep
        self._cache: dict[bytes, _Resolved] = {}
        self._cache_key = random_bytes.token_bytes(32)  # BLAKE2b's key: this process's own

    async def authenticate(self, header: str | None) -> Principal:
        """The principal of the request's key, or `Unauthorised`."""
        token = bearer_token(header)
        # A missing or malformed key is hashed too, under every secret, so every refusal
        # costs the same.
        material = token if token is not None else ""
        entry = hashlib.blake2b(
            material.encode("utf-8", "surrogatepass"), key=self._cache_key
        ).digest()
        now = time.monotonic()
        resolved = self._cache.get(entry)
        if resolved is None or resolved.until <= now:
            hashes = [hash_key(secret, material) for secret in self._secrets]
            resolved = await self._resolve(hashes, now + self._ttl)
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[entry] = resolved
        wall = time.time_ns() // 1000
        principal = resolved.principal
        expired = resolved.expires_at is not None and wall >= resolved.expires_at
        if principal is None or token is None or expired:
            raise Unauthorised()
        self._upkeep.used(principal.key_id, wall)
        return principal

    async def _resolve(self, hashes: list[str], until: float) -> _Resolved:
        async with self._db.connection() as conn:
            records = await repository.find_keys(conn, hashes)
        match = _first_match(records, hashes)
        if match is None:
            return _Resolved(until, None, None)
        index, record = match
        expired = record.expires_at is not None and time.time_ns() // 1000 >= record.expires_at
        if record.revoked or expired:
            return _Resolved(until, None, None)
        if index != 0 or record.secret_fingerprint != self._fingerprints[0]:
            # Stored under an older secret (or before fingerprints): move it to the newest.
            change = repository.Rehash(record.id, record.key_hash, hashes[0], self._fingerprints[0])
            self._upkeep.rehash(change)
        return _Resolved(until, principal_of(record), record.expires_at)


def _first_match(
    records: list[repository.KeyRecord], hashes: list[str]
) -> tuple[int, repository.KeyRecord] | None:
    """The key stored under the first (newest) secret's hash that any key is stored under,
    with that secret's place in the list. The index found it by hash; compare in constant
    time all the same."""
    for index, key_hash in enumerate(hashes):
        for record in records:
            if hmac.compare_digest(record.key_hash, key_hash):
                return index, record
    return None
