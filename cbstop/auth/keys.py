"""API key material: generation, the keyed hash stored at rest, and abilities."""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "cbs_"
READ = "integrations:read"
WRITE = "integrations:write"
ABILITIES = (READ, WRITE)
DEFAULT_ABILITIES = frozenset(ABILITIES)
# The longest Authorization value worth hashing; longer keys cannot exist.
MAX_KEY_LENGTH = 512


def generate_key() -> str:
    """A new key: `cbs_` and 256 bits of randomness, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def generate_key_id() -> str:
    """A key's public id, safe to log and to show in `cbstop keys list`."""
    return "key_" + secrets.token_hex(8)


def hash_key(secret: str, key: str) -> str:
    """HMAC-SHA256 of the key under the server secret, as 64 hex characters."""
    return hmac.new(
        secret.encode(), key.encode("utf-8", "surrogatepass"), hashlib.sha256
    ).hexdigest()


def encode_abilities(abilities: frozenset[str] | set[str]) -> str:
    """The stored form: sorted, space-separated."""
    return " ".join(sorted(abilities))


def decode_abilities(stored: str) -> frozenset[str]:
    """The set a stored form stands for."""
    return frozenset(stored.split())
