"""The plain values a load passes between its checks and the database.

`Lookups` (from the checks) names the ids to fetch; `Existing` (from `bulk.py`) is what the
database holds for them, each stored row as the content an entry of the file is compared
with; `Plan` (from the checks) holds the rows to add, as tuples in `COLUMNS` order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

from cbstop.auth.keys import encode_abilities
from cbstop.webhooks.endpoints import encode_event_types
from cbstop.world.schema import (
    ApiKey,
    Integration,
    Merchant,
    Organisation,
    Partner,
    PartnerGroup,
    WebhookEndpoint,
)


class PartnerRow(TypedDict):
    name: str


class OrganisationRow(TypedDict):
    name: str
    partner_id: str | None


class PartnerGroupRow(TypedDict):
    partner_id: str
    name: str
    is_admin: bool
    organisation_ids: set[str]


class MerchantRow(TypedDict):
    organisation_id: str
    name: str


class IntegrationRow(TypedDict):
    organisation_id: str
    name: str
    type: str
    status: str
    merchant_ids: list[str]  # in position order


class ApiKeyRow(TypedDict):
    key_hash: str
    organisation_id: str | None
    partner_group_id: str | None
    abilities: str  # the stored form, `encode_abilities`
    revoked: bool


class WebhookEndpointRow(TypedDict):
    organisation_id: str | None
    partner_group_id: str | None
    url: str
    secret: str
    event_types: str  # the stored form, `encode_event_types`


# An entry of the file as the row it would be stored as, to compare with what is stored.


def partner_row(p: Partner) -> PartnerRow:
    return {"name": p.name}


def organisation_row(o: Organisation) -> OrganisationRow:
    return {"name": o.name, "partner_id": o.partner_id}


def group_row(g: PartnerGroup) -> PartnerGroupRow:
    return {
        "partner_id": g.partner_id,
        "name": g.name,
        "is_admin": g.is_admin,
        "organisation_ids": set(g.organisation_ids),
    }


def merchant_row(m: Merchant) -> MerchantRow:
    return {"organisation_id": m.organisation_id, "name": m.name}


def integration_row(i: Integration) -> IntegrationRow:
    return {
        "organisation_id": i.organisation_id,
        "name": i.name,
        "type": i.type,
        "status": i.status,
        "merchant_ids": list(i.merchant_ids),
    }


def key_row(key: ApiKey, key_hash: str) -> ApiKeyRow:
    return {
        "key_hash": key_hash,
        "organisation_id": key.organisation_id,
        "partner_group_id": key.partner_group_id,
        "abilities": encode_abilities(set(key.abilities)),
        "revoked": key.revoked,
    }


def webhook_row(e: WebhookEndpoint) -> WebhookEndpointRow:
    # Not the status: the deliverer disables an endpoint that answers 410, and loading the file
    # again must not call that a conflict.
    return {
        "organisation_id": e.organisation_id,
        "partner_group_id": e.partner_group_id,
        "url": e.url,
        "secret": e.secret,
        "event_types": encode_event_types(e.event_types or ()),
    }


@dataclass(frozen=True)
class Lookups:
    """The ids whose stored rows the checks need, per table, and the key hashes to look up."""

    partners: list[str]
    organisations: list[str]
    partner_groups: list[str]
    merchants: list[str]
    integrations: list[str]
    api_keys: list[str]
    key_hashes: list[str]
    webhook_endpoints: list[str]


@dataclass
class Existing:
    """What the database already holds for the looked-up ids: each table's rows by id."""

    partners: dict[str, PartnerRow] = field(default_factory=dict)
    organisations: dict[str, OrganisationRow] = field(default_factory=dict)
    partner_groups: dict[str, PartnerGroupRow] = field(default_factory=dict)
    merchants: dict[str, MerchantRow] = field(default_factory=dict)
    integrations: dict[str, IntegrationRow] = field(default_factory=dict)
    api_keys: dict[str, ApiKeyRow] = field(default_factory=dict)
    key_owners: dict[str, str] = field(default_factory=dict)  # key hash -> stored key's id
    webhook_endpoints: dict[str, WebhookEndpointRow] = field(default_factory=dict)


# The tables a load writes, in the order it writes them (each row's references first), and
# the columns of the plan's row tuples.
COLUMNS: dict[str, tuple[str, ...]] = {
    "partners": ("id", "name"),
    "organisations": ("id", "name", "partner_id"),
    "partner_groups": ("id", "partner_id", "name", "is_admin"),
    "partner_group_organisations": ("partner_group_id", "organisation_id", "partner_id"),
    "merchants": ("id", "organisation_id", "name"),
    "integrations": (
        "id",
        "organisation_id",
        "partner_id",
        "name",
        "type",
        "status",
        "created_at",
    ),
    "integration_merchants": ("integration_id", "position", "merchant_id", "organisation_id"),
    "api_keys": (
        "id",
        "key_hash",
        "organisation_id",
        "partner_group_id",
        "abilities",
        "revoked",
        "revoked_at",
        "created_at",
        "secret_fingerprint",
    ),
    "webhook_endpoints": (
        "id",
        "organisation_id",
        "partner_group_id",
        "url",
        "secret",
        "event_types",
        "status",
        "disabled_reason",
        "created_at",
    ),
}


@dataclass
class Plan:
    """What a load adds: new rows per table (every table of `COLUMNS`, in its order), the
    integrations each organisation and partner gains, and entries already stored per section."""

    rows: dict[str, list[tuple[Any, ...]]]
    organisation_counts: dict[str, int]
    partner_counts: dict[str, int]
    unchanged: dict[str, int]

    @property
    def added(self) -> dict[str, int]:
        """Rows added per table."""
        return {table: len(rows) for table, rows in self.rows.items()}
