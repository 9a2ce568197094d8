"""API key material: generation, the keyed hash stored at rest, and abilities."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

KEY_PREFIX = "cbs_"
READ = "integrations:read"
WRITE = "integrations:write"
ABILITIES = (READ, WRITE)
DEFAULT_ABILITIES = frozenset(ABILITIES)
# What a key may look like, for the `Authorization` header and world files alike: printable
# ASCII without spaces (0x21-0x7E), so it travels in a header byte for byte and no parser's idea
# of whitespace can trim it; 20 characters at least (CONTRACT 2.3; generated keys have 47).
# A longer or other value cannot be a key, so it is not worth hashing.
MIN_KEY_LENGTH = 20
MAX_KEY_LENGTH = 512
_KEY = re.compile(rf"[\x21-\x7e]{{{MIN_KEY_LENGTH},{MAX_KEY_LENGTH}}}")


def generate_key() -> str:
    """A new key: `cbs_` and 256 bits of randomness, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def is_key_shaped(value: str) -> bool:
    """Whether `value` could be a key: 20-512 printable ASCII characters, no spaces."""
    return _KEY.fullmatch(value) is not None


def key_shape_problem(value: str) -> str | None:
    """Why `value` could never be a key (one phrase for an operator), or None."""
    if len(value) < MIN_KEY_LENGTH:
        return f"must be at least {MIN_KEY_LENGTH} characters"
    if len(value) > MAX_KEY_LENGTH:
        return f"must be at most {MAX_KEY_LENGTH} characters"
    if not is_key_shaped(value):
        return (
            "must be printable ASCII without spaces or control characters (0x21-0x7E): "
            "no other key can authenticate"
        )
    return None


def generate_key_id() -> str:
    """A key's public id, safe to log and to show in `cbstop keys list`."""
    return "key_" + secrets.token_hex(8)


def hash_key(secret: str, key: str) -> str:
    """HMAC-SHA256 of the key under the server secret, as 64 hex characters."""
    return hmac.new(
        secret.encode(), key.encode("utf-8", "surrogatepass"), hashlib.sha256
    ).hexdigest()


# What a secret's fingerprint is an HMAC of: a fixed message, so the fingerprint says which
# secret a key was hashed with while revealing nothing usable about the secret itself.
_FINGERPRINT_MESSAGE = b"cbstop key-secret fingerprint"


def secret_fingerprint(secret: str) -> str:
    """The fingerprint stored with each key: 16 hex characters of HMAC-SHA256(secret, a fixed
    message). It tells which configured secret a key was hashed with; the secret is not stored."""
    return hmac.new(secret.encode(), _FINGERPRINT_MESSAGE, hashlib.sha256).hexdigest()[:16]


def encode_abilities(abilities: frozenset[str] | set[str]) -> str:
    """The stored form: sorted, space-separated."""
    return " ".join(sorted(abilities))


def decode_abilities(stored: str) -> frozenset[str]:
    """The set a stored form stands for."""
    return frozenset(stored.split())
