"""Events SQL for PostgreSQL: every statement whole, as it runs.

Each request is one statement. Sessions use generic plans (`plan_cache_mode =
force_generic_plan`), so each statement is shaped to plan well without its parameters' values
(the integrations' SQL module says why at length); the same rules hold here:

- Only numbered events (`seq IS NOT NULL`) are ever read: the sequencer numbers an event
  after its write commits, and a page ordered by `seq` must not show one whose place in that
  order is not settled yet. A page says `seq IS NOT NULL` in so many words: the page indexes
  hold numbered events only (partial, `cbstop/db/tables.py`), and a generic plan may use one
  only where the statement implies its condition.
- An event is looked up by id through a fence (`id >= $1 ORDER BY id LIMIT 1`), then tested
  for being that id, numbered and in scope: an id found in another tenant and an id found
  nowhere cost the same (one index descent, one heap fetch; for a group, the membership probe
  either way). So a 404 for GET one, and a 422 for a bad `starting_after`, take one path.
- A page is a backward range scan of the scope's page index (`ix_events_organisation_page`,
  `ix_events_partner_page`, or `ix_events_integration_page` with `integration_id`) from the
  cursor's `seq` down, stopping after `limit + 1` rows (the extra one says `has_more`).
  The cursor's `seq` and a filter's scope test are one-time InitPlans, so the scan's bounds
  are known before it starts. The scope's column is bounded as a range (`e.partner_id >=
  $1 AND e.partner_id <= $1`, the same rows as `= $1`) and the page ordered by the index's
  whole key (`ORDER BY e.partner_id DESC, e.seq DESC`): with `= $1` the planner treats the
  column as a constant, drops it from the order, and a generic plan for a partner walked
  `uq_events_seq` newest first and filtered by partner instead, reading every other partner's
  newer events too (0.65 ms for 21 rows on 20 partners; unbounded for a small partner beside
  a busy one). As a range, only the scope's index gives that order, and the range and the
  cursor's `seq` both position its backward scan.
- Checked with EXPLAIN ANALYZE on 100k events (20 partners, 200 organisations, 10k
  integrations), generic plans: every page is `Limit -> Index Scan Backward using
  ix_events_{organisation,partner,integration}_page` with `Index Cond: (... >= $1 AND ... <=
  $1 AND seq < $n)`, 0.08-0.16 ms; a group's merge is one such scan of
  `ix_events_organisation_page` per assigned organisation (5 organisations: 0.3-0.4 ms); a
  lookup by id is one `pk_events` descent.

A page statement answers one row per event (the cursor flag, then COLUMNS and `seq`), or one
row with NULL event columns when the page is empty; the flag is false when `starting_after`
was given and is not a numbered event in scope, and then the page is always empty.

Parameters of every page statement: $1 scope id, $2 rows wanted (limit + 1), $3
`starting_after` or NULL, $4 `type` or NULL, and for the `INTEGRATION_PAGE` statements $5
the integration id.
"""

from __future__ import annotations

from cbstop.db.scope import ScopeKind
from cbstop.events.schemas import COLUMNS

# Above any seq: the bound of a first page.
_TOP = 9223372036854775807

# The fenced lookup of event $1: the first row at or after the id, whichever it is.
_FENCE = "(SELECT * FROM events WHERE id >= {p} ORDER BY id LIMIT 1) e"

# $1 event id, $2 scope id.
GET: dict[ScopeKind, str] = {
    "organisation": f"""
SELECT {COLUMNS}
FROM {_FENCE.format(p="$1")}
WHERE e.id = $1 AND e.seq IS NOT NULL AND e.organisation_id = $2
""",
    "partner": f"""
SELECT {COLUMNS}
FROM {_FENCE.format(p="$1")}
WHERE e.id = $1 AND e.seq IS NOT NULL AND e.partner_id = $2
""",
    # The membership probe is keyed by the row's organisation only if the row is the id,
    # numbered ('' otherwise), and is the only test, so it runs for a missing id too.
    "group": f"""
SELECT {COLUMNS}
FROM {_FENCE.format(p="$1")}
JOIN LATERAL (
    SELECT 1 FROM partner_group_organisations g
    WHERE g.partner_group_id = $2
      AND g.organisation_id = CASE WHEN e.id = $1 AND e.seq IS NOT NULL
                                   THEN e.organisation_id ELSE '' END
    OFFSET 0
) assigned ON true
""",
}


def _cursor(kind: ScopeKind) -> str:
    """The CTEs `cursor` (the seq of event $3 if numbered and in scope $1) and `bound` (the
    seq a page starts below: the top without $3; NULL for a $3 that is not such an event)."""
    if kind == "group":
        lookup = f"""
    SELECT e.seq FROM {_FENCE.format(p="$3")}
    JOIN LATERAL (
        SELECT 1 FROM partner_group_organisations g
        WHERE g.partner_group_id = $1
          AND g.organisation_id = CASE WHEN e.id = $3 AND e.seq IS NOT NULL
                                       THEN e.organisation_id ELSE '' END
        OFFSET 0
    ) assigned ON true"""
    else:
        column = "organisation_id" if kind == "organisation" else "partner_id"
        lookup = f"""
    SELECT e.seq FROM {_FENCE.format(p="$3")}
    WHERE e.id = $3 AND e.seq IS NOT NULL AND e.{column} = $1"""
    return f"""cursor AS ({lookup}
), bound AS (
    SELECT CASE WHEN $3::text IS NULL THEN {_TOP}::bigint
                ELSE (SELECT seq FROM cursor) END AS seq
)"""


# What every page statement ends with: the flag, then the page's events, newest first.
_ANSWER = """
SELECT bound.seq IS NOT NULL, p.*
FROM bound LEFT JOIN page p ON true
ORDER BY p.seq DESC
"""

PAGE: dict[ScopeKind, str] = {
    "organisation": f"""
WITH {_cursor("organisation")}, page AS (
    SELECT {COLUMNS}, e.seq FROM events e
    WHERE e.organisation_id >= $1 AND e.organisation_id <= $1 AND e.seq IS NOT NULL
      AND e.seq < (SELECT seq FROM bound)
      AND ($4::text IS NULL OR e.type = $4)
    ORDER BY e.organisation_id DESC, e.seq DESC LIMIT $2
){_ANSWER}""",
    "partner": f"""
WITH {_cursor("partner")}, page AS (
    SELECT {COLUMNS}, e.seq FROM events e
    WHERE e.partner_id >= $1 AND e.partner_id <= $1 AND e.seq IS NOT NULL
      AND e.seq < (SELECT seq FROM bound)
      AND ($4::text IS NULL OR e.type = $4)
    ORDER BY e.partner_id DESC, e.seq DESC LIMIT $2
){_ANSWER}""",
    # A non-admin group: each assigned organisation's newest `$2` events below the bound off
    # its page index, merged, the page's rows then read by key (OFFSET 0 keeps that a nested
    # loop). Bounded by (assigned organisations x $2) index entries, whatever the partner's
    # other organisations hold; walking the partner's index instead would read every event
    # of unassigned organisations newer than the page (unbounded: a desk for one quiet
    # organisation of a busy partner). Groups hold a handful of organisations.
    "group": f"""
WITH {_cursor("group")}, picked AS (
    SELECT x.id, x.seq
    FROM partner_group_organisations g
    CROSS JOIN LATERAL (
        SELECT e.id, e.seq FROM events e
        WHERE e.organisation_id = g.organisation_id AND e.seq IS NOT NULL
          AND e.seq < (SELECT seq FROM bound)
          AND ($4::text IS NULL OR e.type = $4)
        ORDER BY e.organisation_id DESC, e.seq DESC LIMIT $2
    ) x
    WHERE g.partner_group_id = $1
    ORDER BY x.seq DESC LIMIT $2
), page AS (
    SELECT {COLUMNS}, e.seq
    FROM picked CROSS JOIN LATERAL (SELECT * FROM events e WHERE e.id = picked.id OFFSET 0) e
){_ANSWER}""",
}


def _integration_page(kind: ScopeKind) -> str:
    """The page of integration $5's events: its own page index, walked only if the
    integration is in the scope (a one-time test: an integration outside it reads no event).
    An integration's events are all of its organisation, which never changes."""
    if kind == "organisation":
        in_scope = "i.organisation_id = $1"
    elif kind == "partner":
        in_scope = "i.partner_id = $1"
    else:
        in_scope = (
            "EXISTS (SELECT 1 FROM partner_group_organisations g "
            "WHERE g.partner_group_id = $1 AND g.organisation_id = i.organisation_id)"
        )
    return f"""
WITH {_cursor(kind)}, visible AS (
    SELECT EXISTS (SELECT 1 FROM integrations i WHERE i.id = $5 AND {in_scope}) AS yes
), page AS (
    SELECT {COLUMNS}, e.seq FROM events e
    WHERE e.integration_id >= $5 AND e.integration_id <= $5 AND e.seq IS NOT NULL
      AND e.seq < (SELECT seq FROM bound)
      AND (SELECT yes FROM visible)
      AND ($4::text IS NULL OR e.type = $4)
    ORDER BY e.integration_id DESC, e.seq DESC LIMIT $2
){_ANSWER}"""


INTEGRATION_PAGE: dict[ScopeKind, str] = {
    "organisation": _integration_page("organisation"),
    "partner": _integration_page("partner"),
    "group": _integration_page("group"),
}
