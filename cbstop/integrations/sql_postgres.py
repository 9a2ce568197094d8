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

from cbstop.db.scope import SCOPE_KINDS, ScopeKind
from cbstop.idempotency import store

# --- reads --------------------------------------------------------------------------------


# $1 integration id, $2 scope id.
GET: dict[ScopeKind, str] = {
    "organisation": """
SELECT i.id, i.organisation_id, i.name, i.type, i.status,
       ARRAY(SELECT m.merchant_id FROM integration_merchants m
             WHERE m.integration_id = i.id ORDER BY m.position), i.version
FROM (SELECT * FROM integrations WHERE id >= $1 ORDER BY id LIMIT 1) i
WHERE i.id = $1 AND i.organisation_id = $2
""",
    "partner": """
SELECT i.id, i.organisation_id, i.name, i.type, i.status,
       ARRAY(SELECT m.merchant_id FROM integration_merchants m
             WHERE m.integration_id = i.id ORDER BY m.position), i.version
FROM (SELECT * FROM integrations WHERE id >= $1 ORDER BY id LIMIT 1) i
WHERE i.id = $1 AND i.partner_id = $2
""",
    # The membership probe is keyed by the row's organisation only if the row is the id
    # ('' otherwise), and is the only test: a separate `i.id = $1` would be applied first and
    # skip the probe for a missing id.
    "group": """
SELECT i.id, i.organisation_id, i.name, i.type, i.status,
       ARRAY(SELECT m.merchant_id FROM integration_merchants m
             WHERE m.integration_id = i.id ORDER BY m.position), i.version
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
    SELECT i.id, i.organisation_id, i.name, i.type, i.status, i.created_at, i.version
    FROM integrations i
    WHERE i.organisation_id = $1
    ORDER BY i.created_at DESC, i.id LIMIT $2 OFFSET $3
)
SELECT total.n, i.id, i.organisation_id, i.name, i.type, i.status,
       ARRAY(SELECT m.merchant_id FROM integration_merchants m
             WHERE m.integration_id = i.id ORDER BY m.position), i.version
FROM total LEFT JOIN page i ON true
ORDER BY i.created_at DESC, i.id
""",
    "partner": """
WITH total AS (
    SELECT COALESCE(SUM(n), 0) AS n FROM partner_integration_counts WHERE partner_id = $1
), page AS (
    SELECT i.id, i.organisation_id, i.name, i.type, i.status, i.created_at, i.version
    FROM integrations i
    WHERE i.partner_id = $1
    ORDER BY i.created_at DESC, i.id LIMIT $2 OFFSET $3
)
SELECT total.n, i.id, i.organisation_id, i.name, i.type, i.status,
       ARRAY(SELECT m.merchant_id FROM integration_merchants m
             WHERE m.integration_id = i.id ORDER BY m.position), i.version
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
        SELECT i.id, i.organisation_id, i.name, i.type, i.status, i.created_at, i.version
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
        SELECT i.id, i.organisation_id, i.name, i.type, i.status, i.created_at, i.version
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
             WHERE m.integration_id = i.id ORDER BY m.position), i.version
FROM total LEFT JOIN page i ON true
ORDER BY i.created_at DESC, i.id
""",
}


def _organisation(kind: ScopeKind, organisation: str, scope: str) -> str:
    """The organisation (bind parameter `organisation`) if it is in the scope (`scope`): its
    id and partner, looked up by a key that holds the scope."""
    if kind == "organisation":
        return f"""
SELECT o.id, o.partner_id FROM organisations o WHERE o.id = {organisation} AND o.id = {scope}"""
    if kind == "partner":
        return f"""
SELECT o.id, o.partner_id FROM organisations o
WHERE o.id = {organisation} AND o.partner_id = {scope}"""
    return f"""
SELECT g.organisation_id AS id, g.partner_id FROM partner_group_organisations g
WHERE g.partner_group_id = {scope} AND g.organisation_id = {organisation}"""


# $1 organisation id, $2 scope id.
ORGANISATION: dict[ScopeKind, str] = {kind: _organisation(kind, "$1", "$2") for kind in SCOPE_KINDS}

# --- writes -------------------------------------------------------------------------------


def _create(kind: ScopeKind) -> str:
    """Check the organisation's scope and its merchants, insert the integration (version 1),
    its merchant rows, the count increments and, for a request with an Idempotency-Key, its
    answer: all or nothing, one statement.

    $1 id, $2 organisation id, $3 name, $4 status, $5 created_at, $6 merchant ids (in order),
    $7 count shard, $8 scope id (the organisation is looked up as ORGANISATION does, unless
    the key already has an answer); the key: $9 owner (NULL: no key), $10 key, $11 fingerprint,
    and the answer to store: $12 body, $13 Location, $14 ETag; the event (CONTRACT 3.4, left
    for the sequencer to number, timed by the database's clock as updates' are): $15 id, $16
    request id, $17 Idempotency-Key or NULL, $18 actor type, $19 its `data`. Answers
    (organisation found, every merchant its own) and the answer already stored under the key
    (store.COLUMNS, NULL when there is none), in which case nothing was written.
    """
    return f"""
WITH stored AS (
    SELECT {store.COLUMNS} FROM idempotency_keys WHERE owner = $9 AND key = $10
), org AS (
    SELECT * FROM ({_organisation(kind, "$2", "$8")}) o WHERE NOT EXISTS (SELECT 1 FROM stored)
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
), remembered AS (
    INSERT INTO idempotency_keys
        (owner, key, fingerprint, created_at, status_code, body, location, etag)
    SELECT $9, $10, $11, $5, 201, $12, $13, $14 FROM ins WHERE $9::text IS NOT NULL
), event AS (
    INSERT INTO events (id, created_at, type, organisation_id, partner_id, integration_id, data,
                        request_id, idempotency_key, actor_type)
    SELECT $15, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint,
           'integration.created', ins.organisation_id, ins.partner_id, ins.id, $19, $16, $17, $18
    FROM ins
)
SELECT EXISTS (SELECT 1 FROM org), COALESCE((SELECT merchants_ok FROM ok), false), stored.*
FROM (SELECT 1) one LEFT JOIN stored ON true
"""


CREATE: dict[ScopeKind, str] = {kind: _create(kind) for kind in SCOPE_KINDS}

# The integration a PATCH names, found as GET finds it ($1 id, $4 scope id): its id, type and
# version.
_UPDATE_TARGET: dict[ScopeKind, str] = {
    "organisation": """
    SELECT i.id, i.type, i.version, i.name, i.status, i.partner_id
    FROM (SELECT * FROM integrations WHERE id >= $1 ORDER BY id LIMIT 1) i
    WHERE i.id = $1 AND i.organisation_id = $4""",
    "partner": """
    SELECT i.id, i.type, i.version, i.name, i.status, i.partner_id
    FROM (SELECT * FROM integrations WHERE id >= $1 ORDER BY id LIMIT 1) i
    WHERE i.id = $1 AND i.partner_id = $4""",
    "group": """
    SELECT i.id, i.type, i.version, i.name, i.status, i.partner_id
    FROM (SELECT * FROM integrations WHERE id >= $1 ORDER BY id LIMIT 1) i
    JOIN LATERAL (
        SELECT 1 FROM partner_group_organisations g
        WHERE g.partner_group_id = $4
          AND g.organisation_id = CASE WHEN i.id = $1 THEN i.organisation_id ELSE '' END
        OFFSET 0
    ) assigned ON true""",
}


def _update(kind: ScopeKind) -> str:
    """Set each given field (NULL keeps the stored value) of an integration of the updatable
    type whose version If-Match allows, in one UPDATE, and add 1 to its version if a value
    changed. Two concurrent PATCHes of different fields both land: the later one re-reads the
    row after the first commits, finds the version moved on and changes nothing, and the
    repository runs it again (so a stale If-Match never overwrites, and the event's
    `previous_attributes` are always the values this update replaced).

    A change records its event (CONTRACT 3.4, left for the sequencer to number): `data` is the
    integration after, as the API represents it (`represent`; a test holds the two equal), and
    the values it changed, as they were.

    $1 id, $2 name or NULL, $3 status or NULL, $4 scope id, $5 the updatable type, $6 the
    versions If-Match allows (NULL: any); the event: $7 id, $8 request id, $9
    Idempotency-Key or NULL, $10 actor type (its time: the database's clock once the row is
    locked, so two updates of one integration are timed in the order they were made). No
    row: not in scope. Otherwise (the type, the version as read) and the updated integration,
    or NULLs if nothing changed: another type, or a version If-Match does not allow.
    """
    return f"""
WITH target AS ({_UPDATE_TARGET[kind]}
), upd AS (
    UPDATE integrations i SET name = COALESCE($2, i.name), status = COALESCE($3, i.status),
        version = i.version + CASE
            WHEN COALESCE($2, i.name) = i.name AND COALESCE($3, i.status) = i.status THEN 0
            ELSE 1 END
    FROM target
    WHERE i.id = target.id AND target.type = $5 AND i.version = target.version
      AND ($6::bigint[] IS NULL OR i.version = ANY($6::bigint[]))
    RETURNING i.id, i.organisation_id, i.name, i.type, i.status,
              ARRAY(SELECT m.merchant_id FROM integration_merchants m
                    WHERE m.integration_id = i.id ORDER BY m.position) AS merchant_ids,
              i.version
), event AS (
    INSERT INTO events (id, created_at, type, organisation_id, partner_id, integration_id, data,
                        request_id, idempotency_key, actor_type)
    SELECT $7, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint,
           'integration.updated', upd.organisation_id, target.partner_id, upd.id,
           json_build_object(
               'object', json_build_object(
                   'id', upd.id, 'organisation_id', upd.organisation_id, 'name', upd.name,
                   'type', upd.type, 'status', upd.status,
                   'merchant_ids', to_json(upd.merchant_ids),
                   'links', json_build_array(json_build_object(
                       'rel', 'self', 'uri', '/v1/integrations/' || upd.id))),
               'previous_attributes', json_strip_nulls(json_build_object(
                   'name', CASE WHEN upd.name <> target.name THEN target.name END,
                   'status', CASE WHEN upd.status <> target.status THEN target.status END))
           )::text,
           $8, $9, $10
    FROM upd, target
    WHERE upd.version <> target.version
)
SELECT target.type, target.version, upd.* FROM target LEFT JOIN upd ON true
"""


UPDATE: dict[ScopeKind, str] = {kind: _update(kind) for kind in SCOPE_KINDS}

# $1 id: the version now (the current ETag of a 412), whoever's scope.
VERSION = "SELECT version FROM integrations WHERE id = $1"
