"""A key's scope, and the SQL predicates that confine a row to it.

A scope is one of three kinds (CONTRACT 1.4):

- `organisation` (an organisation's key): `id` is the organisation;
- `partner` (an admin partner group's key): every organisation of partner `id`;
- `group` (a non-admin group's key): the organisations assigned to group `id`.

Statements are written whole in each resource's SQL module; where only the scope differs
between kinds, the predicate comes from here, with the scope id's bind parameter named by
the statement (`integration_in_scope(kind, "$2")`), so a reader sees which parameter it is.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

ScopeKind = Literal["organisation", "partner", "group"]
SCOPE_KINDS: tuple[ScopeKind, ...] = ("organisation", "partner", "group")


class Scope(NamedTuple):
    """What a key can see: its kind, and the organisation, partner or group id."""

    kind: ScopeKind
    id: str


def integration_in_scope(kind: ScopeKind, param: str) -> str:
    """Whether integrations row `i` is inside the scope whose id is bind parameter `param`."""
    if kind == "organisation":
        return f"i.organisation_id = {param}"
    if kind == "partner":
        return f"i.partner_id = {param}"
    return (
        "EXISTS (SELECT 1 FROM partner_group_organisations g "
        f"WHERE g.partner_group_id = {param} AND g.organisation_id = i.organisation_id)"
    )


def organisation_in_scope(kind: ScopeKind, param: str) -> str:
    """Whether organisations row `o` is inside the scope whose id is bind parameter `param`."""
    if kind == "organisation":
        return f"o.id = {param}"
    if kind == "partner":
        return f"o.partner_id = {param}"
    return (
        "EXISTS (SELECT 1 FROM partner_group_organisations g "
        f"WHERE g.partner_group_id = {param} AND g.organisation_id = o.id)"
    )
