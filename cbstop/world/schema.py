"""The world file's shape: strict models, so a typo or a wrong type is refused, not guessed at.

Only the shape of each entry is checked here; references between entries (and to rows already
in the database) are checked in `checks.py`, against rows fetched in bulk.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from cbstop.auth.keys import MAX_KEY_LENGTH, MIN_KEY_LENGTH, key_shape_problem
from cbstop.integrations import rules
from cbstop.webhooks import endpoints, signing


def _key_shaped(value: str) -> str:
    problem = key_shape_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


# The API's own rules (cbstop/integrations/rules.py, cbstop/auth/keys.py): what loads is what
# the API could have accepted, can store on both databases, and can serve.
Id = Annotated[
    str,
    StringConstraints(min_length=1, max_length=rules.ID_MAX_LENGTH),
    AfterValidator(rules.storable),
]
IntegrationId = Annotated[str, AfterValidator(rules.integration_id)]
# The API takes merchant ids of at most 64 characters: a longer one could never be linked.
MerchantId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=rules.MERCHANT_ID_MAX_LENGTH),
    AfterValidator(rules.storable),
]
Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=rules.NAME_MAX_LENGTH),
    AfterValidator(rules.display_name),
]
IntegrationType = Annotated[
    str,
    StringConstraints(min_length=1, max_length=rules.TYPE_MAX_LENGTH),
    AfterValidator(rules.storable),
]
Secret = Annotated[
    str,
    StringConstraints(min_length=MIN_KEY_LENGTH, max_length=MAX_KEY_LENGTH),
    AfterValidator(_key_shaped),
]


def _webhook_url(value: str) -> str:
    problem = endpoints.url_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _webhook_secret(value: str) -> str:
    signing.signing_key(value)  # its ValueError says what is wrong
    return value


def _event_types(values: list[str]) -> list[str]:
    if not values:
        raise ValueError("must not be empty: leave it out to send every type")
    for value in values:
        if values.count(value) > 1:
            raise ValueError(f"contains {value} twice")
    return values


WebhookUrl = Annotated[str, AfterValidator(_webhook_url)]
WebhookSecret = Annotated[str, AfterValidator(_webhook_secret)]
# cbstop.events.record.EVENT_TYPES, as a type (tests/webhooks/test_world.py holds them equal).
EventType = Literal["integration.created", "integration.updated"]
Ability = Literal["integrations:read", "integrations:write"]
ALL_ABILITIES: tuple[Ability, ...] = ("integrations:read", "integrations:write")


class Entry(BaseModel):
    """Every entry: unknown fields refused, no type coercion, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Partner(Entry):
    id: Id
    name: Name


class PartnerGroup(Entry):
    id: Id
    partner_id: Id
    name: Name
    is_admin: bool
    organisation_ids: list[Id] = Field(default_factory=list)


class Organisation(Entry):
    id: Id
    name: Name
    partner_id: Id | None


class Merchant(Entry):
    id: MerchantId
    organisation_id: Id
    name: Name


class Integration(Entry):
    id: IntegrationId
    organisation_id: Id
    name: Name
    type: IntegrationType
    status: Literal["ENABLED", "DISABLED"]
    merchant_ids: Annotated[list[MerchantId], Field(min_length=1, max_length=1000)]


class ApiKey(Entry):
    id: Id
    secret: Secret
    organisation_id: Id | None = None
    partner_group_id: Id | None = None
    # Omitted means every ability, as for a key made with `cbstop keys create`.
    abilities: list[Ability] = Field(default_factory=lambda: list(ALL_ABILITIES))
    revoked: bool = False


class WebhookEndpoint(Entry):
    id: Id
    url: WebhookUrl
    secret: WebhookSecret
    organisation_id: Id | None = None
    partner_group_id: Id | None = None
    # Omitted means every type, as for an endpoint added with `cbstop webhooks add`.
    event_types: Annotated[list[EventType], AfterValidator(_event_types)] | None = None


class World(Entry):
    partners: list[Partner] = Field(default_factory=list)
    partner_groups: list[PartnerGroup] = Field(default_factory=list)
    organisations: list[Organisation] = Field(default_factory=list)
    merchants: list[Merchant] = Field(default_factory=list)
    integrations: list[Integration] = Field(default_factory=list)
    api_keys: list[ApiKey] = Field(default_factory=list)
    webhook_endpoints: list[WebhookEndpoint] = Field(default_factory=list)


SECTIONS = tuple(World.model_fields)


def entry_label(raw: Any, section: str, index: int) -> str:
    """`integrations[3] (int_x)`: the entry's place in the file and, when it has one, its id."""
    label = f"{section}[{index}]"
    try:
        entry_id = raw[section][index]["id"]
    except (KeyError, IndexError, TypeError):
        return label
    if not isinstance(entry_id, str):
        return label
    # An id that would not print as itself (a NUL, a tab, a stray space) is shown quoted and
    # escaped, so the one line names it unambiguously.
    shown = entry_id if entry_id.isprintable() and entry_id.strip() == entry_id else None
    return f"{label} ({shown if shown else json.dumps(entry_id)})"


def describe_validation_error(exc: ValidationError, raw: Any) -> str:
    """The first problem of a failed validation, as one line naming the entry and field."""
    error = exc.errors(include_url=False)[0]
    loc = list(error["loc"])
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    elif error["type"] == "string_too_short" and loc[-1:] == ["secret"]:
        message = f"secret must be at least {MIN_KEY_LENGTH} characters"
    elif error["type"] == "value_error":
        # Our own rules' phrases, without pydantic's "Value error, " in front.
        message = str(error.get("ctx", {}).get("error", message))
    if not loc:
        return f"the world file must be a JSON object: {message}"
    section = str(loc[0])
    if len(loc) >= 2 and isinstance(loc[1], int):
        where = entry_label(raw, section, loc[1])
        field = ".".join(str(part) for part in loc[2:])
    else:
        where, field = section, ".".join(str(part) for part in loc[1:])
        if len(loc) == 1 and error["type"] == "extra_forbidden":
            message = f"unknown section (expected one of {', '.join(SECTIONS)})"
    return f"{where}: {field}: {message}" if field else f"{where}: {message}"
