"""The checks of a world load, pure: no database, no I/O, nothing to await.

`lookups()` names the ids whose stored rows the checks need; the loader fetches them in bulk
(`bulk.fetch_existing`) and hands them back as an `Existing` snapshot. `plan()` then checks
every entry, section by section in the file's order, against the file and that snapshot, and
returns the rows to add, or raises a `WorldError` naming the first offending entry.

Every check sees the whole file, so a reference may point forwards (a group assigned an
organisation declared further down). An entry whose id is already stored with the same
content is counted unchanged and not written again, so loading a file twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from cbstop.world.errors import WorldError
from cbstop.world.rows import (
    ApiKeyRow,
    Existing,
    Lookups,
    Plan,
    WebhookEndpointRow,
    group_row,
    integration_row,
    key_row,
    merchant_row,
    organisation_row,
    partner_row,
    webhook_row,
)
from cbstop.world.schema import (
    ApiKey,
    Integration,
    Merchant,
    Organisation,
    Partner,
    PartnerGroup,
    WebhookEndpoint,
    World,
    entry_label,
)


class _Entry(Protocol):
    @property
    def id(self) -> str: ...


E = TypeVar("E", bound=_Entry)


def lookups(world: World, key_hashes: Sequence[str]) -> Lookups:
    """The ids to fetch: each section's own, and those it refers to that the file lacks."""
    return Lookups(
        partners=_ids(
            (p.id for p in world.partners),
            (o.partner_id for o in world.organisations if o.partner_id is not None),
            (g.partner_id for g in world.partner_groups),
        ),
        organisations=_ids(
            (o.id for o in world.organisations),
            (o for g in world.partner_groups for o in g.organisation_ids),
            (m.organisation_id for m in world.merchants),
            (i.organisation_id for i in world.integrations),
            (k.organisation_id for k in world.api_keys if k.organisation_id is not None),
            (w.organisation_id for w in world.webhook_endpoints if w.organisation_id is not None),
        ),
        partner_groups=_ids(
            (g.id for g in world.partner_groups),
            (k.partner_group_id for k in world.api_keys if k.partner_group_id is not None),
            (w.partner_group_id for w in world.webhook_endpoints if w.partner_group_id is not None),
        ),
        merchants=_ids(
            (m.id for m in world.merchants),
            (mid for i in world.integrations for mid in i.merchant_ids),
        ),
        integrations=[i.id for i in world.integrations],
        api_keys=[k.id for k in world.api_keys],
        key_hashes=list(key_hashes),
        webhook_endpoints=[w.id for w in world.webhook_endpoints],
    )


def _ids(*groups: Iterable[str]) -> list[str]:
    """Every id of the groups, once each, in order of first appearance."""
    ids: dict[str, None] = {}
    for group in groups:
        ids.update(dict.fromkeys(group))
    return list(ids)


def plan(
    world: World,
    raw: Mapping[str, Any],
    *,
    key_hashes: Sequence[str],
    key_fingerprint: str,
    now: int,
    existing: Existing,
) -> Plan:
    """Check every entry; the rows to add, or a `WorldError` naming the first refused entry.

    `raw` is the file as parsed (for entry labels), `key_hashes` the hashed secret of each
    key in file order, `key_fingerprint` the fingerprint of the key secret that made them,
    `now` the load's time in microseconds.
    """
    return _Checks(world, raw, existing).plan(key_hashes, key_fingerprint, now)


@dataclass
class _Checks:
    world: World
    raw: Mapping[str, Any]
    existing: Existing

    def __post_init__(self) -> None:
        w, db = self.world, self.existing
        self.unchanged: dict[str, int] = {}
        # What exists once the load is done: the database's rows, overlaid by the file's.
        self.partners = {p.id for p in w.partners} | db.partners.keys()
        self.org_partner = {i: r["partner_id"] for i, r in db.organisations.items()}
        self.org_partner.update((o.id, o.partner_id) for o in w.organisations)
        self.groups = {g.id for g in w.partner_groups} | db.partner_groups.keys()
        self.merchant_org = {i: r["organisation_id"] for i, r in db.merchants.items()}
        self.merchant_org.update((m.id, m.organisation_id) for m in w.merchants)

    def plan(self, key_hashes: Sequence[str], key_fingerprint: str, now: int) -> Plan:
        w = self.world
        partners = self._partners(w.partners)
        orgs = self._organisations(w.organisations)
        groups = self._partner_groups(w.partner_groups)
        merchants = self._merchants(w.merchants)
        integrations = self._integrations(w.integrations)
        keys = self._api_keys(w.api_keys, key_hashes)
        webhooks = self._webhook_endpoints(w.webhook_endpoints)

        org_partner = self.org_partner
        per_org: dict[str, int] = {}
        per_partner: dict[str, int] = {}
        for i in integrations:
            per_org[i.organisation_id] = per_org.get(i.organisation_id, 0) + 1
            partner = org_partner[i.organisation_id]
            if partner is not None:
                per_partner[partner] = per_partner.get(partner, 0) + 1
        return Plan(
            rows={
                "partners": [(p.id, p.name) for p in partners],
                "organisations": [(o.id, o.name, o.partner_id) for o in orgs],
                "partner_groups": [(g.id, g.partner_id, g.name, g.is_admin) for g in groups],
                "partner_group_organisations": [
                    (g.id, o, g.partner_id) for g in groups for o in g.organisation_ids
                ],
                "merchants": [(m.id, m.organisation_id, m.name) for m in merchants],
                "integrations": [
                    (
                        i.id,
                        i.organisation_id,
                        org_partner[i.organisation_id],
                        i.name,
                        i.type,
                        i.status,
                        now,
                    )
                    for i in integrations
                ],
                "integration_merchants": [
                    (i.id, position, mid, i.organisation_id)
                    for i in integrations
                    for position, mid in enumerate(i.merchant_ids)
                ],
                "api_keys": [
                    (
                        key.id,
                        c["key_hash"],
                        c["organisation_id"],
                        c["partner_group_id"],
                        c["abilities"],
                        key.revoked,
                        now if key.revoked else None,
                        now,
                        key_fingerprint,
                    )
                    for key, c in keys
                ],
                "webhook_endpoints": [
                    (
                        e.id,
                        c["organisation_id"],
                        c["partner_group_id"],
                        c["url"],
                        c["secret"],
                        c["event_types"],
                        "enabled",
                        None,
                        now,
                    )
                    for e, c in webhooks
                ],
            },
            organisation_counts=per_org,
            partner_counts=per_partner,
            unchanged=self.unchanged,
        )

    def fail(self, section: str, index: int, message: str) -> WorldError:
        return WorldError(f"{entry_label(self.raw, section, index)}: {message}")

    def _unique(self, section: str, entries: Sequence[_Entry]) -> None:
        seen: dict[str, int] = {}
        for index, entry in enumerate(entries):
            first = seen.setdefault(entry.id, index)
            if first != index:
                where = entry_label(self.raw, section, first)
                raise self.fail(section, index, f"duplicate id, already declared at {where}")

    def _new(
        self,
        section: str,
        entries: Sequence[E],
        stored: Mapping[str, Mapping[str, object]],
        content: Callable[[E], Mapping[str, object]],
    ) -> list[E]:
        """The entries not yet stored; an id stored with other content is refused."""
        new = []
        for index, entry in enumerate(entries):
            have = stored.get(entry.id)
            if have is None:
                new.append(entry)
                continue
            want = content(entry)
            if have != want:
                fields = [k for k in want if want[k] != have.get(k)]
                raise self.fail(
                    section,
                    index,
                    "id already exists in the database with a different "
                    + ", ".join(fields or ["content"]),
                )
        self.unchanged[section] = len(entries) - len(new)
        return new

    # --- one method per section: check, and return what is new ------------------------------

    def _partners(self, entries: list[Partner]) -> list[Partner]:
        self._unique("partners", entries)
        return self._new("partners", entries, self.existing.partners, partner_row)

    def _organisations(self, entries: list[Organisation]) -> list[Organisation]:
        self._unique("organisations", entries)
        for index, org in enumerate(entries):
            if org.partner_id is not None and org.partner_id not in self.partners:
                raise self.fail("organisations", index, f"partner {org.partner_id} does not exist")
        return self._new("organisations", entries, self.existing.organisations, organisation_row)

    def _partner_groups(self, entries: list[PartnerGroup]) -> list[PartnerGroup]:
        self._unique("partner_groups", entries)
        orgs = self.org_partner
        for index, group in enumerate(entries):
            if group.partner_id not in self.partners:
                raise self.fail(
                    "partner_groups", index, f"partner {group.partner_id} does not exist"
                )
            seen: set[str] = set()
            for org_id in group.organisation_ids:
                if org_id in seen:
                    raise self.fail(
                        "partner_groups", index, f"organisation_ids contains {org_id} twice"
                    )
                seen.add(org_id)
                if org_id not in orgs:
                    raise self.fail(
                        "partner_groups", index, f"organisation {org_id} does not exist"
                    )
                if orgs[org_id] != group.partner_id:
                    owner = orgs[org_id] or "no partner"
                    raise self.fail(
                        "partner_groups",
                        index,
                        f"organisation {org_id} belongs to {owner}, "
                        f"not to the group's partner {group.partner_id}",
                    )
        return self._new("partner_groups", entries, self.existing.partner_groups, group_row)

    def _merchants(self, entries: list[Merchant]) -> list[Merchant]:
        self._unique("merchants", entries)
        for index, merchant in enumerate(entries):
            if merchant.organisation_id not in self.org_partner:
                raise self.fail(
                    "merchants", index, f"organisation {merchant.organisation_id} does not exist"
                )
        return self._new("merchants", entries, self.existing.merchants, merchant_row)

    def _integrations(self, entries: list[Integration]) -> list[Integration]:
        self._unique("integrations", entries)
        orgs, merchant_org = self.org_partner, self.merchant_org
        for index, integration in enumerate(entries):
            org_id = integration.organisation_id
            if org_id not in orgs:
                raise self.fail("integrations", index, f"organisation {org_id} does not exist")
            mids = integration.merchant_ids
            if len(set(mids)) != len(mids):
                twice = next(m for m in mids if mids.count(m) > 1)
                raise self.fail("integrations", index, f"merchant_ids contains {twice} twice")
            for mid in mids:
                owner = merchant_org.get(mid)
                if owner != org_id:
                    problem = "does not exist" if owner is None else "does not belong to"
                    raise self.fail(
                        "integrations",
                        index,
                        f"merchant {mid} {problem}"
                        + (f" organisation {org_id}" if owner is not None else ""),
                    )
        return self._new("integrations", entries, self.existing.integrations, integration_row)

    def _api_keys(
        self, entries: list[ApiKey], key_hashes: Sequence[str]
    ) -> list[tuple[ApiKey, ApiKeyRow]]:
        """The new keys, each with the content its row stores."""
        self._unique("api_keys", entries)
        first_with: dict[str, int] = {}
        stored: dict[str, ApiKeyRow] = {}
        for index, (key, key_hash) in enumerate(zip(entries, key_hashes, strict=True)):
            if (key.organisation_id is None) == (key.partner_group_id is None):
                raise self.fail(
                    "api_keys", index, "give exactly one of organisation_id and partner_group_id"
                )
            if key.organisation_id is not None and key.organisation_id not in self.org_partner:
                raise self.fail(
                    "api_keys", index, f"organisation {key.organisation_id} does not exist"
                )
            if key.partner_group_id is not None and key.partner_group_id not in self.groups:
                raise self.fail(
                    "api_keys", index, f"partner group {key.partner_group_id} does not exist"
                )
            first = first_with.setdefault(key_hash, index)
            if first != index:
                where = entry_label(self.raw, "api_keys", first)
                raise self.fail("api_keys", index, f"secret is already used by {where}")
            stored[key.id] = key_row(key, key_hash)
        new = self._new("api_keys", entries, self.existing.api_keys, lambda k: stored[k.id])
        owners = self.existing.key_owners
        for index, key in enumerate(entries):
            other = owners.get(stored[key.id]["key_hash"])
            if other is not None and other != key.id:
                raise self.fail("api_keys", index, f"secret is already used by key {other}")
        return [(key, stored[key.id]) for key in new]

    def _webhook_endpoints(
        self, entries: list[WebhookEndpoint]
    ) -> list[tuple[WebhookEndpoint, WebhookEndpointRow]]:
        """The new endpoints, each with the content its row stores."""
        section = "webhook_endpoints"
        self._unique(section, entries)
        for index, e in enumerate(entries):
            if (e.organisation_id is None) == (e.partner_group_id is None):
                raise self.fail(
                    section, index, "give exactly one of organisation_id and partner_group_id"
                )
            if e.organisation_id is not None and e.organisation_id not in self.org_partner:
                raise self.fail(section, index, f"organisation {e.organisation_id} does not exist")
            if e.partner_group_id is not None and e.partner_group_id not in self.groups:
                raise self.fail(
                    section, index, f"partner group {e.partner_group_id} does not exist"
                )
        new = self._new(section, entries, self.existing.webhook_endpoints, webhook_row)
        return [(e, webhook_row(e)) for e in new]
