"""An Idempotency-Key as sent, and the fingerprint of the request it names.

A key is 1-255 characters of 0x21-0x7E, bare (`abc`) or as a structured-field string
(`"abc"`, RFC 8941, with `\\"` and `\\\\` escapes): the two spellings are one key. The
fingerprint is SHA-256 over the method, the path (one trailing slash ignored) and the body
as parsed JSON, re-encoded canonically (keys sorted, no whitespace), so key order and
spacing do not make a retry a different request.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import orjson

from cbstop.errors import InvalidIdempotencyKey

MAX_LENGTH = 255


def parse_key(value: str | None) -> str | None:
    """The key a header value names (None: no header), or `InvalidIdempotencyKey`."""
    if value is None:
        return None
    text = value.strip(" \t")
    if text.startswith('"'):
        text = _unquote(text)
    if not 1 <= len(text) <= MAX_LENGTH or not all("\x21" <= c <= "\x7e" for c in text):
        raise InvalidIdempotencyKey()
    return text


def _unquote(text: str) -> str:
    """A structured-field string's value; `InvalidIdempotencyKey` if it is broken."""
    out: list[str] = []
    escaped = False
    for i, char in enumerate(text[1:], start=1):
        if escaped:
            if char not in '"\\':
                raise InvalidIdempotencyKey()
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            if i != len(text) - 1:
                raise InvalidIdempotencyKey()
            return "".join(out)
        else:
            out.append(char)
    raise InvalidIdempotencyKey()  # no closing quote


def fingerprint(method: str, path: str, body: dict[str, Any]) -> bytes:
    """SHA-256 of the method, the path without one trailing slash, and the canonical body."""
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    try:
        canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        # What orjson refuses (a lone surrogate, an integer too long to be one) is encoded
        # by the standard library instead, behind a byte orjson never writes first.
        canonical = (
            b"\0"
            + json.dumps(
                body, sort_keys=True, ensure_ascii=True, separators=(",", ":"), default=repr
            ).encode()
        )
    digest = hashlib.sha256(f"{method} {path}\n".encode("utf-8", "surrogatepass"))
    digest.update(canonical)
    return digest.digest()


def now_micros() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class Keyed:
    """One request's Idempotency-Key: whose it is, what request it names, and its clock."""

    owner: str
    key: str
    fingerprint: bytes
    # When this request was received, and the oldest stored answer still alive then
    # (microseconds since the epoch).
    now: int
    cutoff: int

    @classmethod
    def of(cls, owner: str, key: str, fingerprint: bytes, ttl: float) -> Keyed:
        now = now_micros()
        return cls(owner, key, fingerprint, now, now - int(ttl * 1_000_000))

    def alive(self, created_at: int) -> bool:
        """Whether an answer stored at `created_at` is still kept."""
        return created_at >= self.cutoff


@dataclass(frozen=True, slots=True)
class Answer:
    """A write's answer as it was sent, stored under its key and replayed byte for byte."""

    status: int
    body: bytes
    location: str | None = None
    etag: str | None = None
    # When it was stored under its key (microseconds since the epoch); None: not stored.
    stored_at: int | None = None
