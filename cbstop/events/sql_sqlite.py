"""Events SQL for SQLite: every statement whole, as it runs.

The same statements as on PostgreSQL (`sql_postgres.py` says what each answers), in SQLite's
words: `$n` parameters are SQLite's `?n`. On SQLite a write numbers its own event in its
transaction, so every stored event has its `seq`; the `seq IS NOT NULL` tests are kept so
both dialects say the same thing, and they name the page indexes' own condition (they hold
numbered events only, `cbstop/db/tables.py`). A page is a backward walk of the scope's
page index from the cursor's `seq` (`EXPLAIN QUERY PLAN`: `SEARCH e USING INDEX ix_events_*_page
(organisation_id=? AND seq<?)`; the final `ORDER BY` sorts only the page). A group's page
walks every event newest first (the unique index on `seq`), keeping those of its
organisations: SQLite has no LATERAL for PostgreSQL's merge, and serves one process's worth
of data.
"""

from __future__ import annotations

from cbstop.db.scope import SCOPE_KINDS, ScopeKind
from cbstop.events.schemas import COLUMNS

_TOP = 9223372036854775807

_MEMBER = (
    "EXISTS (SELECT 1 FROM partner_group_organisations g "
    "WHERE g.partner_group_id = {scope} AND g.organisation_id = {organisation})"
)


def _in_scope(kind: ScopeKind, scope: str, alias: str = "e") -> str:
    """Whether row `alias` (an event, or an integration) is inside scope `scope`."""
    if kind == "organisation":
        return f"{alias}.organisation_id = {scope}"
    if kind == "partner":
        return f"{alias}.partner_id = {scope}"
    return _MEMBER.format(scope=scope, organisation=f"{alias}.organisation_id")


def _get(kind: ScopeKind) -> str:
    """$1 event id, $2 scope id."""
    return f"""
SELECT {COLUMNS} FROM events e
WHERE e.id = $1 AND e.seq IS NOT NULL AND {_in_scope(kind, "$2")}
"""


GET: dict[ScopeKind, str] = {kind: _get(kind) for kind in SCOPE_KINDS}


def _bound(kind: ScopeKind) -> str:
    """The CTE `bound`: the seq a page starts below (the top without $3; NULL for a $3 that
    is not a numbered event in scope $1)."""
    return f"""bound AS (
    SELECT CASE WHEN $3 IS NULL THEN {_TOP}
                ELSE (SELECT e.seq FROM events e
                      WHERE e.id = $3 AND e.seq IS NOT NULL AND {_in_scope(kind, "$1")}) END
           AS seq
)"""


_ANSWER = """
SELECT bound.seq IS NOT NULL, p.*
FROM bound LEFT JOIN page p ON 1 = 1
ORDER BY p.seq DESC
"""


def _page(kind: ScopeKind) -> str:
    """$1 scope id, $2 rows wanted, $3 `starting_after` or NULL, $4 `type` or NULL."""
    if kind == "group":
        where = (
            "e.organisation_id IN (SELECT g.organisation_id FROM partner_group_organisations g "
            "WHERE g.partner_group_id = $1)"
        )
    else:
        where = _in_scope(kind, "$1")
    return f"""
WITH {_bound(kind)}, page AS (
    SELECT {COLUMNS}, e.seq FROM events e
    WHERE {where} AND e.seq IS NOT NULL
      AND e.seq < (SELECT seq FROM bound)
      AND ($4 IS NULL OR e.type = $4)
    ORDER BY e.seq DESC LIMIT $2
){_ANSWER}"""


PAGE: dict[ScopeKind, str] = {kind: _page(kind) for kind in SCOPE_KINDS}


def _integration_page(kind: ScopeKind) -> str:
    """The same, for the events of integration $5 (walked only if it is in the scope)."""
    return f"""
WITH {_bound(kind)}, page AS (
    SELECT {COLUMNS}, e.seq FROM events e
    WHERE e.integration_id = $5 AND e.seq IS NOT NULL
      AND e.seq < (SELECT seq FROM bound)
      AND EXISTS (SELECT 1 FROM integrations i WHERE i.id = $5 AND {_in_scope(kind, "$1", "i")})
      AND ($4 IS NULL OR e.type = $4)
    ORDER BY e.seq DESC LIMIT $2
){_ANSWER}"""


INTEGRATION_PAGE: dict[ScopeKind, str] = {kind: _integration_page(kind) for kind in SCOPE_KINDS}
