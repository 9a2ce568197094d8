"""Reference "bare get": a bare ASGI app fetching one integration by primary key on cbstop's pool.

`GET /v1/integrations/{id}` runs one statement on a connection of cbstop's own pool
(`bench/refs/pooled.py`: `PostgresDatabase` with the settings `cbstop serve` reads): the row
and its merchant ids, in position order, in one round trip. It builds the contract's
representation and encodes it with orjson. No authentication, no scope, no framework: the
ceiling of cbstop's GET one on the same database, pool, server and workers. Reads
CBSTOP_DATABASE_URL (and the other CBSTOP_* settings).

    CBSTOP_DATABASE_URL=postgresql://... python -m uvicorn bench.refs.bare_get:app --workers 2
"""

from __future__ import annotations

import orjson

from bench.refs.pooled import NOT_FOUND, Pooled, Receive, Scope, Send, respond
from cbstop.db.postgres import PostgresDatabase

PREFIX = "/v1/integrations/"
SQL = """
SELECT i.id, i.organisation_id, i.name, i.type, i.status,
       ARRAY(SELECT m.merchant_id FROM integration_merchants m
             WHERE m.integration_id = i.id ORDER BY m.position) AS merchant_ids
FROM integrations i
WHERE i.id = $1
"""

_pooled = Pooled()


async def _http(db: PostgresDatabase, scope: Scope, receive: Receive, send: Send) -> None:
    path: str = scope["path"]
    if not path.startswith(PREFIX):
        await respond(send, 200 if path == "/healthz" else 404, b"{}")
        return
    await get_one(db, path, send)


app = _pooled.asgi(_http)


async def get_one(db: PostgresDatabase, path: str, send: Send) -> None:
    """Answer `GET /v1/integrations/{id}` (`path`)."""
    async with db.connection() as conn:
        row = await conn.fetchrow(SQL, path[len(PREFIX) :].rstrip("/"))
    if row is None:
        await respond(send, 404, NOT_FOUND)
        return
    integration_id = row["id"]
    body = orjson.dumps(
        {
            "id": integration_id,
            "organisation_id": row["organisation_id"],
            "name": row["name"],
            "type": row["type"],
            "status": row["status"],
            "merchant_ids": row["merchant_ids"],
            "links": [{"rel": "self", "uri": PREFIX + integration_id}],
        }
    )
    await respond(send, 200, body)
