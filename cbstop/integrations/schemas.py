"""What clients send and what they get back.

Input models are strict (no coercion: `123` is not a string, `"5"` is not an integer), refuse
unknown fields and explicit nulls, and count lengths in code points. Output is built as plain
dicts and encoded with orjson, not re-validated on the way out.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from cbstop.idempotency.keys import Answer
from cbstop.integrations import rules
from cbstop.integrations.repository import Integration

CUSTOM_ORDERS = "CUSTOM_ORDERS"

Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=rules.NAME_MAX_LENGTH),
    AfterValidator(rules.display_name),
    Field(description="Display name: 1-255 characters, not blank, no control characters."),
]
MerchantId = Annotated[
    str, StringConstraints(min_length=1, max_length=rules.MERCHANT_ID_MAX_LENGTH)
]
OrganisationId = Annotated[str, StringConstraints(min_length=1, max_length=rules.ID_MAX_LENGTH)]

_STRICT = ConfigDict(strict=True, extra="forbid", hide_input_in_errors=True)


class IntegrationCreate(BaseModel):
    """Body of POST /v1/integrations."""

    model_config = _STRICT

    organisation_id: OrganisationId = Field(description="Organisation that owns the integration.")
    name: Name
    type: Literal["CUSTOM_ORDERS"] = Field(description="Integration type: CUSTOM_ORDERS only.")
    status: Literal["ENABLED", "DISABLED"] = Field(
        default="ENABLED", description="Initial status; ENABLED when omitted."
    )
    merchant_ids: list[MerchantId] = Field(
        min_length=1,
        max_length=1000,
        description="Merchants linked to the integration: unique, of the organisation.",
    )

    @field_validator("status", mode="before")
    @classmethod
    def _status_not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must not be null")
        return value


class IntegrationUpdate(BaseModel):
    """Body of PATCH /v1/integrations/{integration_id}: at least one of the fields."""

    model_config = _STRICT

    name: Name | None = None
    status: Literal["DISABLED"] | None = Field(
        default=None, description="DISABLED only; only for CUSTOM_ORDERS integrations."
    )

    @field_validator("name", "status", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must not be null")
        return value


class Link(BaseModel):
    rel: Literal["self"]
    uri: str


class IntegrationOut(BaseModel):
    """An integration, as every endpoint returns it."""

    id: str
    organisation_id: str
    name: str
    type: str
    status: Literal["ENABLED", "DISABLED"]
    merchant_ids: list[str]
    links: list[Link]


class IntegrationPage(BaseModel):
    """A page of the list, with the total in the key's scope."""

    items: list[IntegrationOut]
    count: int


def represent(integration: Integration) -> dict[str, Any]:
    """The exact representation of CONTRACT 1.10."""
    return {
        "id": integration.id,
        "organisation_id": integration.organisation_id,
        "name": integration.name,
        "type": integration.type,
        "status": integration.status,
        "merchant_ids": integration.merchant_ids,
        "links": [{"rel": "self", "uri": f"/v1/integrations/{integration.id}"}],
    }


def etag(version: int) -> str:
    """The strong entity tag of an integration's version (CONTRACT 3.2)."""
    return f'"{version}"'


def written(status: int, integration: Integration, stored_at: int | None = None) -> Answer:
    """The answer to a create (201, with `Location`) or an update (200): the representation
    and its `ETag`. Built before it is sent, so it can be stored under an Idempotency-Key
    (at `stored_at`)."""
    return Answer(
        status,
        orjson.dumps(represent(integration)),
        f"/v1/integrations/{integration.id}" if status == 201 else None,
        etag(integration.version),
        stored_at,
    )
