"""What an integration's values may be: one source for the API's input models and world files.

The API's models (`schemas.py`) and the world loader (`cbstop/world/schema.py`) both build their
fields from these, so a world file cannot hold what the API would refuse or could never serve.
Each check raises `ValueError` with the phrase the API answers in its 422s.
"""

from __future__ import annotations

import re

NAME_MAX_LENGTH = 255
ID_MAX_LENGTH = 255  # organisation ids, and every other id a world file declares
MERCHANT_ID_MAX_LENGTH = 64
TYPE_MAX_LENGTH = 64

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# An integration id is served at `/v1/integrations/{id}` and linked as written there, so it
# holds only RFC 3986's unreserved characters (nothing a client must percent-encode) and is
# not a dot segment (a client would resolve `/v1/integrations/..` away). The API's own ids,
# `int_` and URL-safe base64, are of this form.
INTEGRATION_ID_MAX_LENGTH = 255
_INTEGRATION_ID = re.compile(
    rf"(?!\.\.?\Z)[A-Za-z0-9._~-]{{1,{INTEGRATION_ID_MAX_LENGTH}}}", re.ASCII
)


def is_storable(value: str) -> bool:
    """Whether both databases can store `value`: no NUL (PostgreSQL refuses it in text), no
    unpaired surrogate (not encodable as UTF-8)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable(value: str) -> str:
    """`value`, if both databases can store it."""
    if is_storable(value):
        return value
    if "\x00" in value:
        raise ValueError("must not contain NUL")
    raise ValueError("must be valid Unicode (no unpaired surrogates)")


def display_name(value: str) -> str:
    """`value`, if it is a display name: not blank, no control characters, valid Unicode."""
    if not value.strip():
        raise ValueError("must not be blank")
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return storable(value)


def is_integration_id(value: str) -> bool:
    """Whether `value` can be an integration's id (servable at `/v1/integrations/{id}`)."""
    return _INTEGRATION_ID.fullmatch(value) is not None


def integration_id(value: str) -> str:
    """`value`, if it can be an integration's id."""
    if not is_integration_id(value):
        raise ValueError(
            f"must be 1-{INTEGRATION_ID_MAX_LENGTH} ASCII letters, digits, '-', '.', '_' or '~', "
            "and not '.' or '..': it is served at /v1/integrations/{id}"
        )
    return value
