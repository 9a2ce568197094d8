"""Standard Webhooks signatures (https://www.standardwebhooks.com, CONTRACT 3.5).

A secret is `whsec_` followed by the base64 of the signing key. Each delivery carries
`webhook-id` (the event id), `webhook-timestamp` (Unix seconds) and `webhook-signature`
(`v1,` + base64 HMAC-SHA256 of `id.timestamp.body`), so any Standard Webhooks library can
verify what we send.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

PREFIX = "whsec_"
KEY_BYTES = 32
# The spec asks receivers to accept keys of 24 to 64 bytes; we make 32-byte ones, and a world
# file may bring any length a receiver can use.
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64


def generate_secret() -> str:
    """A new signing secret: `whsec_` and the base64 of 32 random bytes."""
    return PREFIX + base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def signing_key(secret: str) -> bytes:
    """The HMAC key inside a `whsec_` secret; ValueError for a malformed secret."""
    if not secret.startswith(PREFIX):
        raise ValueError(f"a webhook secret starts with {PREFIX!r}")
    try:
        # validate=True: a character outside base64 is a typo, not something to skip over.
        key = base64.b64decode(secret[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"a webhook secret is {PREFIX!r} and then base64") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(
            f"a webhook secret's key is {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, not {len(key)}"
        )
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value for a message: `v1,<base64 HMAC-SHA256>`."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> list[tuple[str, str]]:
    """The three Standard Webhooks headers for a message, names in lower case."""
    return [
        ("webhook-id", msg_id),
        ("webhook-timestamp", str(timestamp)),
        ("webhook-signature", sign(secret, msg_id, timestamp, body)),
    ]
