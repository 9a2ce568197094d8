"""Integrations SQL for PostgreSQL: every statement whole, as it runs.

Each read is one statement: atomic on its own, one round trip, no BEGIN/COMMIT. So is each
batch of writes (`integrations/batching.py`: creates, or PATCHes, gathered from the requests
of the moment), one row per write in arrays; a batch of PATCHes with Idempotency-Keys adds
the keys' answers in the same transaction. Sessions use generic plans
(`plan_cache_mode = force_generic_plan`), so every statement is shaped to plan well without
its parameters' values:

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

The dicts below hold one statement per scope kind, each written whole. The batches' begin
with a comment that names them, so an operator can tell them apart in `pg_stat_activity`
(whose `query` keeps only the first 1,024 bytes by default).
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


def _prefixed(alias: str, columns: str) -> str:
    """`a, b` as `alias.a, alias.b`."""
    return ", ".join(f"{alias}.{column}" for column in columns.split(", "))


def _create(kind: ScopeKind) -> str:
    """Creates, any number in one statement (group commit, `integrations/batching.py`): for
    each, check the organisation's scope and its merchants, insert the integration (version
    1), its merchant rows, its event and, for a request with an Idempotency-Key, its answer;
    and add each organisation's and partner's new integrations to their counts. Each create
    is all or nothing on its own: one that is refused writes nothing and the others go on;
    the statement as a whole is atomic, one round trip and one commit.

    One row per create, in each array at the same place; the arrays of one statement are
    equally long: $1 ids, $2 organisation ids, $3 names, $4 statuses, $5 created_at, $6 scope
    ids (the organisation is looked up as ORGANISATION does, unless the key already has an
    answer); the key: $7 owners (NULL: no key), $8 keys, $9 fingerprints, and the answer to
    store: $10 bodies, $11 Locations, $12 ETags; the event (CONTRACT 3.4, left for the
    sequencer to number, timed by the database's clock as updates' are): $13 ids, $14 request
    ids, $15 Idempotency-Keys, $16 actor types, $17 `data`. The merchants, flat: $18 the place
    of the create each belongs to (1-based), $19 its position, $20 the merchant id. $21 the
    count shard of the whole statement.

    The counts are added once per organisation and per partner, in the order of their ids,
    organisations first (`partner_count` waits on `org_count`), and the keys' answers in the
    order of the keys: concurrent statements take the rows they share in the same order, so
    they queue instead of deadlocking.

    Answers one row per create, in order: (organisation found, every merchant its own) and the
    answer already stored under its key (store.COLUMNS, NULLs when there is none), in which
    case it wrote nothing.
    """
    return f"""
/* cbstop integrations.create: one row per create */
WITH req AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                         $6::text[], $7::text[], $8::text[], $9::bytea[], $10::bytea[],
                         $11::text[], $12::text[], $13::text[], $14::text[], $15::text[],
                         $16::text[], $17::text[])
        WITH ORDINALITY AS r(id, organisation_id, name, status, created_at, scope_id, owner, key,
                             fingerprint, body, location, etag, event_id, request_id,
                             idempotency_key, actor_type, event_data, n)
), wanted AS (
    SELECT * FROM unnest($18::bigint[], $19::integer[], $20::text[]) AS w(n, position, merchant_id)
), stored AS (
    SELECT r.n, {_prefixed("k", store.COLUMNS)}
    FROM req r JOIN idempotency_keys k ON k.owner = r.owner AND k.key = r.key
), org AS (
    SELECT r.n, o.id, o.partner_id
    FROM req r CROSS JOIN LATERAL ({_organisation(kind, "r.organisation_id", "r.scope_id")}) o
    WHERE NOT EXISTS (SELECT 1 FROM stored s WHERE s.n = r.n)
), ok AS (
    SELECT org.n, org.id, org.partner_id FROM org
    WHERE (SELECT count(*) FROM wanted w JOIN merchants m
             ON m.id = w.merchant_id AND m.organisation_id = org.id
           WHERE w.n = org.n) = (SELECT count(*) FROM wanted w WHERE w.n = org.n)
), ins AS (
    INSERT INTO integrations (id, organisation_id, partner_id, name, type, status, created_at)
    SELECT r.id, ok.id, ok.partner_id, r.name, 'CUSTOM_ORDERS', r.status, r.created_at
    FROM ok JOIN req r ON r.n = ok.n
    RETURNING id, organisation_id, partner_id
), made AS (
    SELECT r.*, ins.partner_id FROM ins JOIN req r ON r.id = ins.id
), links AS (
    INSERT INTO integration_merchants (integration_id, position, merchant_id, organisation_id)
    SELECT made.id, w.position, w.merchant_id, made.organisation_id
    FROM made JOIN wanted w ON w.n = made.n
), org_count AS (
    INSERT INTO organisation_integration_counts AS c (organisation_id, shard, n)
    SELECT made.organisation_id, $21, count(*) FROM made
    GROUP BY made.organisation_id ORDER BY made.organisation_id
    ON CONFLICT (organisation_id, shard) DO UPDATE SET n = c.n + excluded.n
    RETURNING 1
), partner_count AS (
    INSERT INTO partner_integration_counts AS c (partner_id, shard, n)
    SELECT made.partner_id, $21, count(*) FROM made
    WHERE made.partner_id IS NOT NULL AND (SELECT count(*) FROM org_count) > 0
    GROUP BY made.partner_id ORDER BY made.partner_id
    ON CONFLICT (partner_id, shard) DO UPDATE SET n = c.n + excluded.n
), remembered AS (
    INSERT INTO idempotency_keys
        (owner, key, fingerprint, created_at, status_code, body, location, etag)
    SELECT made.owner, made.key, made.fingerprint, made.created_at, 201, made.body,
           made.location, made.etag
    FROM made WHERE made.owner IS NOT NULL
    ORDER BY made.owner, made.key
), event AS (
    INSERT INTO events (id, created_at, type, organisation_id, partner_id, integration_id, data,
                        request_id, idempotency_key, actor_type)
    SELECT made.event_id, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint,
           'integration.created', made.organisation_id, made.partner_id, made.id,
           made.event_data, made.request_id, made.idempotency_key, made.actor_type
    FROM made
)
SELECT EXISTS (SELECT 1 FROM org WHERE org.n = r.n), EXISTS (SELECT 1 FROM ok WHERE ok.n = r.n),
       {_prefixed("s", store.COLUMNS)}
FROM req r LEFT JOIN stored s ON s.n = r.n
ORDER BY r.n
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
    """PATCHes, any number in one statement (group commit, `integrations/batching.py`), each
    of a different integration: set each given field (NULL keeps the stored value) of an
    integration of the updatable type whose version If-Match allows, and add 1 to its version
    if a value changed. Each is all or nothing on its own.

    The rows are locked in the order of their ids before any is changed (`locked`), so
    concurrent statements that share rows queue instead of deadlocking. A row that a
    concurrent update changed between this statement's read and its lock is left unchanged
    (`i.version = target.version`), and the repository runs that PATCH again: so a stale
    If-Match never overwrites, and the event's `previous_attributes` are always the values
    this update replaced.

    A change records its event (CONTRACT 3.4, left for the sequencer to number): `data` is the
    integration after, as the API represents it (`represent`; a test holds the two equal), and
    the values it changed, as they were; its time is the database's clock once the row is
    locked, so two updates of one integration are timed in the order they were made.

    One row per PATCH, in each array at the same place: $1 ids, $2 names or NULL, $3 statuses
    or NULL, $4 scope ids, $5 whether it sent If-Match; the event: $6 ids, $7 request ids, $8
    Idempotency-Keys or NULL, $9 actor types; the key: $10 owners (NULL: no key), $11 keys.
    The versions If-Match allows, flat: $12 the place of the PATCH each belongs to (1-based),
    $13 the version. $14 the updatable type. Answers one row per PATCH, in order: nothing
    found (NULLs: not in scope), or the type and version as read and the updated integration
    (NULLs if nothing changed: another type, or a version If-Match does not allow); then the
    answer already stored under its key (store.COLUMNS, NULLs when there is none), in which
    case it changed nothing.
    """
    target = _UPDATE_TARGET[kind].replace("$1", "r.id").replace("$4", "r.scope_id")
    return f"""
/* cbstop integrations.update: one row per PATCH */
WITH req AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::boolean[],
                         $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])
        WITH ORDINALITY AS r(id, name, status, scope_id, if_match, event_id, request_id,
                             idempotency_key, actor_type, owner, key, n)
), allowed AS (
    SELECT * FROM unnest($12::bigint[], $13::bigint[]) AS a(n, version)
), stored AS (
    SELECT r.n, {_prefixed("k", store.COLUMNS)}
    FROM req r JOIN idempotency_keys k ON k.owner = r.owner AND k.key = r.key
), target AS (
    SELECT r.n, t.*
    FROM req r CROSS JOIN LATERAL ({target}) t
    WHERE NOT EXISTS (SELECT 1 FROM stored s WHERE s.n = r.n)
), locked AS (
    SELECT i.id FROM integrations i WHERE i.id IN (SELECT id FROM target)
    ORDER BY i.id FOR NO KEY UPDATE
), upd AS (
    UPDATE integrations i
    SET name = COALESCE(r.name, i.name), status = COALESCE(r.status, i.status),
        version = i.version + CASE
            WHEN COALESCE(r.name, i.name) = i.name AND COALESCE(r.status, i.status) = i.status
            THEN 0 ELSE 1 END
    FROM target JOIN req r ON r.n = target.n
    WHERE (SELECT count(*) FROM locked) > 0
      AND i.id = target.id AND target.type = $14 AND i.version = target.version
      AND (NOT r.if_match
           OR EXISTS (SELECT 1 FROM allowed a WHERE a.n = r.n AND a.version = i.version))
    RETURNING r.n, i.id, i.organisation_id, i.name, i.type, i.status,
              ARRAY(SELECT m.merchant_id FROM integration_merchants m
                    WHERE m.integration_id = i.id ORDER BY m.position) AS merchant_ids,
              i.version
), event AS (
    INSERT INTO events (id, created_at, type, organisation_id, partner_id, integration_id, data,
                        request_id, idempotency_key, actor_type)
    SELECT r.event_id, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint,
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
           r.request_id, r.idempotency_key, r.actor_type
    FROM upd JOIN target ON target.n = upd.n JOIN req r ON r.n = upd.n
    WHERE upd.version <> target.version
)
SELECT target.type, target.version, upd.id, upd.organisation_id, upd.name, upd.type, upd.status,
       upd.merchant_ids, upd.version, {_prefixed("s", store.COLUMNS)}
FROM req r LEFT JOIN target ON target.n = r.n LEFT JOIN upd ON upd.n = r.n
LEFT JOIN stored s ON s.n = r.n
ORDER BY r.n
"""


UPDATE: dict[ScopeKind, str] = {kind: _update(kind) for kind in SCOPE_KINDS}

# $1 id: the version now (the current ETag of a 412), whoever's scope.
VERSION = "SELECT version FROM integrations WHERE id = $1"
