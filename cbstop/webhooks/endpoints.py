"""The operator's webhook endpoints (CONTRACT 3.5): add (the signing secret is returned once),
list, remove, and the most recent delivery attempts.

Each function is one unit of work on the database it is given; the caller owns the database.
The rules an endpoint's URL and event types follow live here once: the world file's checks use
them too.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from cbstop.db.database import Database
from cbstop.events.record import EVENT_TYPES
from cbstop.idempotency.keys import now_micros
from cbstop.keys import repository as owners
from cbstop.webhooks import repository
from cbstop.webhooks.repository import StoredAttempt, StoredEndpoint
from cbstop.webhooks.signing import generate_secret

OwnerKind = Literal["organisation", "partner_group"]

# Long enough for any real receiver's address; a longer one is a paste gone wrong.
MAX_URL_LENGTH = 2048
_UNPRINTABLE = re.compile(r"[\x00-\x20\x7f]")


class WebhookError(Exception):
    """A webhook operation that cannot be done; the message is one line for an operator."""


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    """What an operator may see of an endpoint: never its secret."""

    id: str
    owner_kind: OwnerKind
    owner_id: str
    url: str
    event_types: tuple[str, ...]  # empty: every type
    status: str
    disabled_reason: str | None
    created_at: int


@dataclass(frozen=True, slots=True)
class CreatedEndpoint:
    """A new endpoint with its signing secret: show it once (the receiver needs it to verify)."""

    info: EndpointInfo
    secret: str


def generate_endpoint_id() -> str:
    """`we_` and 64 random bits in hex, like a key's id."""
    return "we_" + secrets.token_hex(8)


def url_problem(url: str) -> str | None:
    """Why `url` cannot receive webhooks, or None: it must be http(s) with a host."""
    if len(url) > MAX_URL_LENGTH:
        return f"the URL is longer than {MAX_URL_LENGTH} characters"
    if _UNPRINTABLE.search(url):
        return "the URL must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError:
        return f"{url!r} is not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http:// or https:// URL with a host"
    return None


def event_types_problem(types: Iterable[str]) -> str | None:
    """Why these event types cannot be subscribed to, or None."""
    seen: set[str] = set()
    for t in types:
        if t not in EVENT_TYPES:
            return f"unknown event type {t!r}: choose from {', '.join(EVENT_TYPES)}"
        if t in seen:
            return f"event type {t} is given twice"
        seen.add(t)
    return None


def encode_event_types(types: Iterable[str]) -> str:
    """The stored form: sorted, space-separated, '' for every type."""
    return " ".join(sorted(set(types)))


def _info(e: StoredEndpoint) -> EndpointInfo:
    return EndpointInfo(
        id=e.id,
        owner_kind="organisation" if e.organisation_id is not None else "partner_group",
        owner_id=e.organisation_id or e.partner_group_id or "",
        url=e.url,
        event_types=tuple(e.event_types.split()),
        status=e.status,
        disabled_reason=e.disabled_reason,
        created_at=e.created_at,
    )


async def add_endpoint(
    db: Database,
    *,
    url: str,
    organisation_id: str | None = None,
    partner_group_id: str | None = None,
    event_types: Iterable[str] = (),
) -> CreatedEndpoint:
    """A new enabled endpoint for an existing organisation or partner group (not both), sent
    the events of `event_types` (every type if none) that its owner can see."""
    if (organisation_id is None) == (partner_group_id is None):
        raise WebhookError("give exactly one of an organisation and a partner group")
    problem = url_problem(url)
    if problem is not None:
        raise WebhookError(problem)
    types = list(event_types)
    problem = event_types_problem(types)
    if problem is not None:
        raise WebhookError(problem)
    secret = generate_secret()
    stored = StoredEndpoint(
        id=generate_endpoint_id(),
        organisation_id=organisation_id,
        partner_group_id=partner_group_id,
        url=url,
        event_types=encode_event_types(types),
        status="enabled",
        disabled_reason=None,
        created_at=now_micros(),
    )
    async with db.transaction(write=True) as conn:
        missing = await owners.missing_owner(conn, organisation_id, partner_group_id)
        if missing is not None:
            raise WebhookError(missing)
        await repository.insert_endpoint(
            conn,
            endpoint_id=stored.id,
            organisation_id=organisation_id,
            partner_group_id=partner_group_id,
            url=url,
            secret=secret,
            event_types=stored.event_types,
            created_at=stored.created_at,
        )
    return CreatedEndpoint(_info(stored), secret)


async def list_endpoints(db: Database) -> list[EndpointInfo]:
    """Every endpoint, oldest first, without secrets."""
    async with db.transaction() as conn:
        return [_info(e) for e in await repository.list_endpoints(conn)]


async def remove_endpoint(db: Database, endpoint_id: str) -> None:
    """Delete an endpoint with its deliveries and their attempts, all or nothing."""
    async with db.transaction(write=True) as conn:
        if not await repository.delete_endpoint(conn, endpoint_id):
            raise WebhookError(f"webhook endpoint {endpoint_id} does not exist")


async def enable_endpoint(db: Database, endpoint_id: str) -> bool:
    """Send events to an endpoint again (one its receiver disabled with 410): True if it was
    disabled. Deliveries cancelled meanwhile stay cancelled; events from now on are sent."""
    async with db.transaction(write=True) as conn:
        before = await repository.enable_endpoint(conn, endpoint_id)
    if before is None:
        raise WebhookError(f"webhook endpoint {endpoint_id} does not exist")
    return before == "disabled"


async def recent_attempts(
    db: Database, endpoint_id: str | None = None, limit: int = 20
) -> list[StoredAttempt]:
    """The most recent delivery attempts, newest first, with their delivery's state; only
    `endpoint_id`'s when given (which must exist)."""
    async with db.transaction() as conn:
        if endpoint_id is not None and not await repository.endpoint_exists(conn, endpoint_id):
            raise WebhookError(f"webhook endpoint {endpoint_id} does not exist")
        return await repository.recent_attempts(conn, endpoint_id, limit)
