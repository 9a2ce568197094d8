"""Who is calling: an `Authorization` header to a `Principal`, or `Unauthorised`.

Resolved keys are cached for `key_cache_ttl` seconds (0.5 s by default), so the hot path
costs no round trip of its own while a revoked key still stops working within 1 s on
every instance. Unknown, malformed and revoked keys take the same path — one HMAC, one
lookup (or cache hit) — and get the same answer.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

from cbstop.auth import repository
from cbstop.auth.keys import decode_abilities, hash_key, is_key_shaped
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


class Authenticator:
    """Resolves keys, with a short-lived per-process cache."""

    def __init__(self, db: Database, secret: str, ttl: float) -> None:
        self._db = db
        self._secret = secret
        self._ttl = ttl
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def authenticate(self, header: str | None) -> Principal:
        """The principal of the request's key, or `Unauthorised`."""
        token = bearer_token(header)
        # A missing or malformed key is hashed too, so every refusal costs the same.
        key_hash = hash_key(self._secret, token if token is not None else "")
        now = time.monotonic()
        cached = self._cache.get(key_hash)
        if cached is not None and cached[0] > now:
            principal = cached[1]
        else:
            principal = await self._resolve(key_hash)
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[key_hash] = (now + self._ttl, principal)
        if principal is None or token is None:
            raise Unauthorised()
        return principal

    async def _resolve(self, key_hash: str) -> Principal | None:
        async with self._db.connection() as conn:
            record = await repository.find_key(conn, key_hash)
        if record is None or record.revoked:
            return None
        # The index found it by hash; compare in constant time all the same.
        if not hmac.compare_digest(record.key_hash, key_hash):
            return None
        return principal_of(record)
