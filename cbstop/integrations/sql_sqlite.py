"""Integrations SQL for SQLite: every statement whole, as it runs.

Reads are one statement each, as on PostgreSQL. SQLite cannot modify data inside a CTE, so
a create or an update is several statements, run by the repository inside the write
transaction `Database.single_statement_write()` gives on SQLite. Merchant ids come back as
a JSON array (`json_group_array`), in their order. `$n` parameters are SQLite's `?n`.
"""

from __future__ import annotations

from cbstop.db.scope import SCOPE_KINDS, ScopeKind, integration_in_scope, organisation_in_scope

# --- reads --------------------------------------------------------------------------------


def _get(kind: ScopeKind) -> str:
    """$1 integration id, $2 scope id."""
    return f"""
SELECT i.id, i.organisation_id, i.name, i.type, i.status,
       (SELECT json_group_array(merchant_id) FROM (
            SELECT m.merchant_id FROM integration_merchants m
            WHERE m.integration_id = i.id ORDER BY m.position)), i.version
FROM integrations i
WHERE i.id = $1 AND {integration_in_scope(kind, "$2")}
"""


GET = {kind: _get(kind) for kind in SCOPE_KINDS}

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
       (SELECT json_group_array(merchant_id) FROM (
            SELECT m.merchant_id FROM integration_merchants m
            WHERE m.integration_id = i.id ORDER BY m.position)), i.version
FROM total LEFT JOIN page i ON 1 = 1
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
       (SELECT json_group_array(merchant_id) FROM (
            SELECT m.merchant_id FROM integration_merchants m
            WHERE m.integration_id = i.id ORDER BY m.position)), i.version
FROM total LEFT JOIN page i ON 1 = 1
ORDER BY i.created_at DESC, i.id
""",
    "group": """
WITH total AS (
    SELECT COALESCE(SUM(c.n), 0) AS n
    FROM partner_group_organisations g
    JOIN organisation_integration_counts c ON c.organisation_id = g.organisation_id
    WHERE g.partner_group_id = $1
), page AS (
    SELECT i.id, i.organisation_id, i.name, i.type, i.status, i.created_at, i.version
    FROM integrations i
    WHERE EXISTS (SELECT 1 FROM partner_group_organisations g
                  WHERE g.partner_group_id = $1 AND g.organisation_id = i.organisation_id)
    ORDER BY i.created_at DESC, i.id LIMIT $2 OFFSET $3
)
SELECT total.n, i.id, i.organisation_id, i.name, i.type, i.status,
       (SELECT json_group_array(merchant_id) FROM (
            SELECT m.merchant_id FROM integration_merchants m
            WHERE m.integration_id = i.id ORDER BY m.position)), i.version
FROM total LEFT JOIN page i ON 1 = 1
ORDER BY i.created_at DESC, i.id
""",
}


def _organisation(kind: ScopeKind) -> str:
    """$1 organisation id, $2 scope id."""
    return f"""
SELECT o.id, o.partner_id FROM organisations o
WHERE o.id = $1 AND {organisation_in_scope(kind, "$2")}
"""


ORGANISATION = {kind: _organisation(kind) for kind in SCOPE_KINDS}


def _target(kind: ScopeKind) -> str:
    """$1 integration id, $2 scope id: its type and version, and the values an update's event
    names as they were (name, status)."""
    return f"""
SELECT i.type, i.version, i.name, i.status FROM integrations i
WHERE i.id = $1 AND {integration_in_scope(kind, "$2")}
"""


TARGET = {kind: _target(kind) for kind in SCOPE_KINDS}

# $1 organisation id, $2 merchant ids as a JSON array.
MERCHANTS_OWNED = """
SELECT count(*) FROM merchants
WHERE organisation_id = $1 AND id IN (SELECT value FROM json_each($2))
"""

# --- writes (inside one write transaction) ------------------------------------------------

INSERT_INTEGRATION = """
INSERT INTO integrations (id, organisation_id, partner_id, name, type, status, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""

INSERT_MERCHANT = """
INSERT INTO integration_merchants (integration_id, position, merchant_id, organisation_id)
VALUES ($1, $2, $3, $4)
"""

# $1 owner, $2 shard.
ADD_TO_ORGANISATION_COUNT = """
INSERT INTO organisation_integration_counts AS c (organisation_id, shard, n) VALUES ($1, $2, 1)
ON CONFLICT (organisation_id, shard) DO UPDATE SET n = c.n + 1
"""

ADD_TO_PARTNER_COUNT = """
INSERT INTO partner_integration_counts AS c (partner_id, shard, n) VALUES ($1, $2, 1)
ON CONFLICT (partner_id, shard) DO UPDATE SET n = c.n + 1
"""

# $1 id, $2 name or NULL, $3 status or NULL: NULL keeps the stored value; the version goes
# up by one if a value changed.
UPDATE = """
UPDATE integrations SET name = COALESCE($2, name), status = COALESCE($3, status),
    version = version + CASE
        WHEN COALESCE($2, name) = name AND COALESCE($3, status) = status THEN 0 ELSE 1 END
WHERE id = $1
"""

# $1 id: the version now (the current ETag of a 412).
VERSION = "SELECT version FROM integrations WHERE id = $1"

# --- events (CONTRACT 3.4), in the change's transaction -----------------------------------

# $1 id, $2 seq, $3 time, $4 integration id, $5 `data`, $6 request id, $7 Idempotency-Key or
# NULL, $8 actor type: a create's event (its `data` is built from the answer).
INSERT_CREATED_EVENT = """
INSERT INTO events (id, seq, created_at, type, organisation_id, partner_id, integration_id, data,
                    request_id, idempotency_key, actor_type)
SELECT $1, $2, $3, 'integration.created', i.organisation_id, i.partner_id, i.id, $5, $6, $7, $8
FROM integrations i WHERE i.id = $4
"""

# The same for an update, after it: `data` is the integration as it is now, as the API
# represents it (`represent`; a test holds the two equal), and $5, the changed values as they
# were (a JSON object).
INSERT_UPDATED_EVENT = """
INSERT INTO events (id, seq, created_at, type, organisation_id, partner_id, integration_id, data,
                    request_id, idempotency_key, actor_type)
SELECT $1, $2, $3, 'integration.updated', i.organisation_id, i.partner_id, i.id,
       json_object(
           'object', json_object(
               'id', i.id, 'organisation_id', i.organisation_id, 'name', i.name,
               'type', i.type, 'status', i.status,
               'merchant_ids', json((SELECT json_group_array(merchant_id) FROM (
                   SELECT m.merchant_id FROM integration_merchants m
                   WHERE m.integration_id = i.id ORDER BY m.position))),
               'links', json_array(json_object('rel', 'self', 'uri', '/v1/integrations/' || i.id))),
           'previous_attributes', json($5)),
       $6, $7, $8
FROM integrations i WHERE i.id = $4
"""
