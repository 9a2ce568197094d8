"""Integrations SQL for PostgreSQL: every statement whole, as it runs.

Each read and each write is one statement: atomic on its own, one round trip, no
BEGIN/COMMIT. Sessions use generic plans (`plan_cache_mode = force_generic_plan`), so every
statement is shaped to plan well without its parameters' values:

- An integration outside the key's scope and one that exists nowhere take the same path,
  so their 404s take the same time (CONTRACT; `python -m bench.timing` measures it). When
  the scope test ran only on a row found by id, another tenant's id cost a heap fetch (and a
  group's membership probe) that a missing id did not: 2-9 us more at the median, z up to
  12 over 3,000 interleaved requests.
  - A lookup by integration id reads the first row at or after the id
    (`id >= $1 ORDER BY id LIMIT 1`), whichever it is, and then tests it for being that id
    and in scope: an id found elsewhere and an id found nowhere both cost one index descent
    and one heap fetch, and a group's membership probe runs either way (with `''`, never an
    organisation id, when the row is not the id). Only an id past the greatest stored id
    reads no row. The LIMIT also fences the lookup: a generic plan cannot answer it from the
    scope's page index, walking every integration of an organisation (5 ms instead of
    0.06 ms once one organisation has 50,000 and the statistics lag). The price: a range
    scan reads the rest of its leaf page, 3-4 us more per lookup than `id = $1` (a PL/pgSQL
    loop of each statement on its generic plan, 100k world; docs/performance.md). Probing a
    key that holds the scope instead would cost nothing, but only an organisation has one
    (`(id, organisation_id)`), and a generic plan answers `id = $1 AND organisation_id = $2`
    from the organisation's page index (seen again on the 1k world).
  - An organisation is looked up by a key that holds the scope (`organisations (id,
    partner_id)`, a group's `partner_group_organisations` key): out of scope and missing
    both end at the same probe, finding nothing.
- A page is a LIMIT over an ordered index scan of the scope's index, never a join back
  against the whole table (a generic plan once hash-joined a page against the table).
- `count` is a sum of at most 8 shard rows per owner (`*_integration_counts`), read in the
  same statement as the page, so both come from one snapshot.

The dicts below hold one statement per scope kind, each written whole.
"""

from __future__ import annotations

from cbstop.db.scope import ScopeKind

# --- reads --------------------------------------------------------------------------------


# $1 integration id, $2 scope id.
GET: dict[ScopeKind, str] = {
    "organisation": """
SELECT i.id, i.organisation_id, i.name, i.type, i.status,
       ARRAY(SELECT m.merchant_id FROM integration_merchants m
             WHERE m.integration_id = i.id ORDER BY m.position)
FROM (SELECT * FROM integrations WHERE id >= $1 ORDER BY id LIMIT 1) i
WHERE i.id = $1 AND i.organisation_id = $2
""",
    "partner": """
SELECT i.id, i.organisation_id, i.name, i.type, i.status,
       ARRAY(SELECT m.merchant_id FROM integration_merchants m
             WHERE m.integration_id = i.id ORDER BY m.position)
FROM (SELECT * FROM integrations WHERE id >= $1 ORDER BY id LIMIT 1) i
WHERE i.id = $1 AND i.partner_id = $2
""",
    # The membership probe is keyed by the row's organisation only if the row is the id
    # ('' otherwise), and is the only test: a separate `i.id = $1` would be applied first and
    # skip the probe for a missing id.
    "group": """
SELECT i.id, i.organisation_id, i.name, i.type, i.status,
       ARRAY(SELECT m.merchant_id FROM integration_merchants m
             WHERE m.integration_id = i.id ORDER BY m.position)
FROM (SELECT * FROM integrations WHERE id >= $1 ORDER BY id LIMIT 1) i
JOIN LATERAL (
    SELECT 1 FROM partner_group_organisations g
    WHERE g.partner_group_id = $2
      AND g.organisation_id = CASE WHEN i.id = $1 THEN i.organisation_id ELSE '' END
    OFFSET 0
) assigned ON true
""",
}

# The count and the page: $1 scope id, $2 limit, $3 offset. One row per item, each with the
# count; a single row with NULL item columns when the page is empty.
LIST: dict[ScopeKind, str] = {
    "organisation": """
WITH total AS (
    SELECT COALESCE(SUM(n), 0) AS n FROM organisation_integration_counts
    WHERE organisation_id = $1
), page AS (
    SELECT i.id, i.organisation_id, i.name, i.type, i.status, i.created_at
    FROM integrations i
    WHERE i.organisation_id = $1
    ORDER BY i.created_at DESC, i.id LIMIT $2 OFFSET $3
)
SELECT total.n, i.id, i.organisation_id, i.name, i.type, i.status,
       ARRAY(SELECT m.merchant_id FROM integration_merchants m
             WHERE m.integration_id = i.id ORDER BY m.position)
FROM total LEFT JOIN page i ON true
ORDER BY i.created_at DESC, i.id
""",
    "partner": """
WITH total AS (
    SELECT COALESCE(SUM(n), 0) AS n FROM partner_integration_counts WHERE partner_id = $1
), page AS (
    SELECT i.id, i.organisation_id, i.name, i.type, i.status, i.created_at
    FROM integrations i
    WHERE i.partner_id = $1
    ORDER BY i.created_at DESC, i.id LIMIT $2 OFFSET $3
)
SELECT total.n, i.id, i.organisation_id, i.name, i.type, i.status,
       ARRAY(SELECT m.merchant_id FROM integration_merchants m
             WHERE m.integration_id = i.id ORDER BY m.position)
FROM total LEFT JOIN page i ON true
ORDER BY i.created_at DESC, i.id
""",
    # A non-admin group's page is read one of two ways; the one-time filters
    # `walk_is_cheaper` / `NOT walk_is_cheaper` make PostgreSQL run only one of them.
    # - walk: the partner's index newest first, keeping rows of the group's organisations:
    #   about (limit + offset) x partner total / group total entries, good while the group
    #   holds at least 1/64 of its partner's integrations. The membership test is fenced
    #   (OFFSET 0) into a per-row check so the plan stays an ordered walk; as a join, stale
    #   statistics once made it a hash join and sort of the whole partner (21 ms, not 1.2).
    # - merge: each assigned organisation's newest (limit + offset) rows off the
    #   organisation index, merged; the page's rows are then fetched by key (OFFSET 0 keeps
    #   that a nested loop, not a hash join).
    "group": """
WITH total AS (
    SELECT COALESCE(SUM(c.n), 0) AS n
    FROM partner_group_organisations g
    JOIN organisation_integration_counts c ON c.organisation_id = g.organisation_id
    WHERE g.partner_group_id = $1
), walk_is_cheaper AS (
    SELECT (SELECT n FROM total) * 64 >= (
        SELECT COALESCE(SUM(c.n), 0)
        FROM partner_groups pg
        JOIN partner_integration_counts c ON c.partner_id = pg.partner_id
        WHERE pg.id = $1
    ) AS yes
), page AS (
    SELECT * FROM (
        SELECT i.id, i.organisation_id, i.name, i.type, i.status, i.created_at
        FROM integrations i
        WHERE i.partner_id = (SELECT partner_id FROM partner_groups WHERE id = $1)
          AND EXISTS (SELECT 1 FROM partner_group_organisations g
                      WHERE g.partner_group_id = $1 AND g.organisation_id = i.organisation_id
                      OFFSET 0)
        ORDER BY i.created_at DESC, i.id LIMIT $2 OFFSET $3
    ) walk
    WHERE (SELECT yes FROM walk_is_cheaper)
    UNION ALL
    SELECT * FROM (
        SELECT i.id, i.organisation_id, i.name, i.type, i.status, i.created_at
        FROM (
            SELECT x.id
            FROM partner_group_organisations g
            CROSS JOIN LATERAL (
                SELECT i.id, i.created_at FROM integrations i
                WHERE i.organisation_id = g.organisation_id
                ORDER BY i.created_at DESC, i.id LIMIT $2::bigint + $3::bigint
            ) x
            WHERE g.partner_group_id = $1
            ORDER BY x.created_at DESC, x.id LIMIT $2 OFFSET $3
        ) ids
        CROSS JOIN LATERAL (SELECT * FROM integrations i WHERE i.id = ids.id OFFSET 0) i
    ) merge
    WHERE NOT (SELECT yes FROM walk_is_cheaper)
)
SELECT total.n, i.id, i.organisation_id, i.name, i.type, i.status,
       ARRAY(SELECT m.merchant_id FROM integration_merchants m
             WHERE m.integration_id = i.id ORDER BY m.position)
FROM total LEFT JOIN page i ON true
ORDER BY i.created_at DESC, i.id
""",
}


# $1 organisation id, $2 scope id. Each looks the organisation up by a key holding the scope.
ORGANISATION: dict[ScopeKind, str] = {
    "organisation": """
SELECT o.id, o.partner_id FROM organisations o WHERE o.id = $1 AND o.id = $2
""",
    "partner": """
SELECT o.id, o.partner_id FROM organisations o WHERE o.id = $1 AND o.partner_id = $2
""",
    "group": """
SELECT g.organisation_id AS id, g.partner_id FROM partner_group_organisations g
WHERE g.partner_group_id = $2 AND g.organisation_id = $1
""",
}

# --- writes -------------------------------------------------------------------------------


# Check the organisation's scope (looked up as ORGANISATION does) and its merchants, insert
# the integration, its merchant rows and the count increments: all or nothing, one statement.
# $1 id, $2 organisation id, $3 name, $4 status, $5 created_at, $6 merchant ids (in order),
# $7 count shard, $8 scope id. Answers (organisation found, every merchant its own).
CREATE: dict[ScopeKind, str] = {
    "organisation": """
WITH org AS (
    SELECT o.id, o.partner_id FROM organisations o WHERE o.id = $2 AND o.id = $8
), ok AS (
    SELECT (SELECT count(*) FROM merchants
            WHERE organisation_id = org.id AND id = ANY($6::text[])) = cardinality($6::text[])
           AS merchants_ok
    FROM org
), ins AS (
    INSERT INTO integrations (id, organisation_id, partner_id, name, type, status, created_at)
    SELECT $1, org.id, org.partner_id, $3, 'CUSTOM_ORDERS', $4, $5 FROM org, ok
    WHERE ok.merchants_ok
    RETURNING id, organisation_id, partner_id
), links AS (
    INSERT INTO integration_merchants (integration_id, position, merchant_id, organisation_id)
    SELECT ins.id, m.ord - 1, m.merchant_id, ins.organisation_id
    FROM ins, unnest($6::text[]) WITH ORDINALITY AS m(merchant_id, ord)
), org_count AS (
    INSERT INTO organisation_integration_counts AS c (organisation_id, shard, n)
    SELECT ins.organisation_id, $7, 1 FROM ins
    ON CONFLICT (organisation_id, shard) DO UPDATE SET n = c.n + 1
), partner_count AS (
    INSERT INTO partner_integration_counts AS c (partner_id, shard, n)
    SELECT ins.partner_id, $7, 1 FROM ins WHERE ins.partner_id IS NOT NULL
    ON CONFLICT (partner_id, shard) DO UPDATE SET n = c.n + 1
)
SELECT EXISTS (SELECT 1 FROM org), COALESCE((SELECT merchants_ok FROM ok), false)
""",
    "partner": """
WITH org AS (
    SELECT o.id, o.partner_id FROM organisations o WHERE o.id = $2 AND o.partner_id = $8
), ok AS (
    SELECT (SELECT count(*) FROM merchants
            WHERE organisation_id = org.id AND id = ANY($6::text[])) = cardinality($6::text[])
           AS merchants_ok
    FROM org
), ins AS (
    INSERT INTO integrations (id, organisation_id, partner_id, name, type, status, created_at)
    SELECT $1, org.id, org.partner_id, $3, 'CUSTOM_ORDERS', $4, $5 FROM org, ok
    WHERE ok.merchants_ok
    RETURNING id, organisation_id, partner_id
), links AS (
    INSERT INTO integration_merchants (integration_id, position, merchant_id, organisation_id)
    SELECT ins.id, m.ord - 1, m.merchant_id, ins.organisation_id
    FROM ins, unnest($6::text[]) WITH ORDINALITY AS m(merchant_id, ord)
), org_count AS (
    INSERT INTO organisation_integration_counts AS c (organisation_id, shard, n)
    SELECT ins.organisation_id, $7, 1 FROM ins
    ON CONFLICT (organisation_id, shard) DO UPDATE SET n = c.n + 1
), partner_count AS (
    INSERT INTO partner_integration_counts AS c (partner_id, shard, n)
    SELECT ins.partner_id, $7, 1 FROM ins WHERE ins.partner_id IS NOT NULL
    ON CONFLICT (partner_id, shard) DO UPDATE SET n = c.n + 1
)
SELECT EXISTS (SELECT 1 FROM org), COALESCE((SELECT merchants_ok FROM ok), false)
""",
    "group": """
WITH org AS (
    SELECT g.organisation_id AS id, g.partner_id FROM partner_group_organisations g
    WHERE g.partner_group_id = $8 AND g.organisation_id = $2
), ok AS (
    SELECT (SELECT count(*) FROM merchants
            WHERE organisation_id = org.id AND id = ANY($6::text[])) = cardinality($6::text[])
           AS merchants_ok
    FROM org
), ins AS (
    INSERT INTO integrations (id, organisation_id, partner_id, name, type, status, created_at)
    SELECT $1, org.id, org.partner_id, $3, 'CUSTOM_ORDERS', $4, $5 FROM org, ok
    WHERE ok.merchants_ok
    RETURNING id, organisation_id, partner_id
), links AS (
    INSERT INTO integration_merchants (integration_id, position, merchant_id, organisation_id)
    SELECT ins.id, m.ord - 1, m.merchant_id, ins.organisation_id
    FROM ins, unnest($6::text[]) WITH ORDINALITY AS m(merchant_id, ord)
), org_count AS (
    INSERT INTO organisation_integration_counts AS c (organisation_id, shard, n)
    SELECT ins.organisation_id, $7, 1 FROM ins
    ON CONFLICT (organisation_id, shard) DO UPDATE SET n = c.n + 1
), partner_count AS (
    INSERT INTO partner_integration_counts AS c (partner_id, shard, n)
    SELECT ins.partner_id, $7, 1 FROM ins WHERE ins.partner_id IS NOT NULL
    ON CONFLICT (partner_id, shard) DO UPDATE SET n = c.n + 1
)
SELECT EXISTS (SELECT 1 FROM org), COALESCE((SELECT merchants_ok FROM ok), false)
""",
}

# Set each given field (NULL keeps the stored value) of an integration of the updatable type,
# in one UPDATE: two concurrent PATCHes of different fields both land, the later one
# re-reading the row after the first commits. The target is found as GET finds it.
# $1 id, $2 name or NULL, $3 status or NULL, $4 scope id, $5 the updatable type. No row:
# not in scope. A row with NULL after the type: found, but of another type; unchanged.
UPDATE: dict[ScopeKind, str] = {
    "organisation": """
WITH target AS (
    SELECT i.id, i.type
    FROM (SELECT * FROM integrations WHERE id >= $1 ORDER BY id LIMIT 1) i
    WHERE i.id = $1 AND i.organisation_id = $4
), upd AS (
    UPDATE integrations i SET name = COALESCE($2, i.name), status = COALESCE($3, i.status)
    FROM target WHERE i.id = target.id AND target.type = $5
    RETURNING i.id, i.organisation_id, i.name, i.type, i.status,
              ARRAY(SELECT m.merchant_id FROM integration_merchants m
                    WHERE m.integration_id = i.id ORDER BY m.position)
)
SELECT target.type, upd.* FROM target LEFT JOIN upd ON true
""",
    "partner": """
WITH target AS (
    SELECT i.id, i.type
    FROM (SELECT * FROM integrations WHERE id >= $1 ORDER BY id LIMIT 1) i
    WHERE i.id = $1 AND i.partner_id = $4
), upd AS (
    UPDATE integrations i SET name = COALESCE($2, i.name), status = COALESCE($3, i.status)
    FROM target WHERE i.id = target.id AND target.type = $5
    RETURNING i.id, i.organisation_id, i.name, i.type, i.status,
              ARRAY(SELECT m.merchant_id FROM integration_merchants m
                    WHERE m.integration_id = i.id ORDER BY m.position)
)
SELECT target.type, upd.* FROM target LEFT JOIN upd ON true
""",
    "group": """
WITH target AS (
    SELECT i.id, i.type
    FROM (SELECT * FROM integrations WHERE id >= $1 ORDER BY id LIMIT 1) i
    JOIN LATERAL (
        SELECT 1 FROM partner_group_organisations g
        WHERE g.partner_group_id = $4
          AND g.organisation_id = CASE WHEN i.id = $1 THEN i.organisation_id ELSE '' END
        OFFSET 0
    ) assigned ON true
), upd AS (
    UPDATE integrations i SET name = COALESCE($2, i.name), status = COALESCE($3, i.status)
    FROM target WHERE i.id = target.id AND target.type = $5
    RETURNING i.id, i.organisation_id, i.name, i.type, i.status,
              ARRAY(SELECT m.merchant_id FROM integration_merchants m
                    WHERE m.integration_id = i.id ORDER BY m.position)
)
SELECT target.type, upd.* FROM target LEFT JOIN upd ON true
""",
}
