"""Reference "bare get": a bare ASGI app doing one asyncpg primary-key fetch of an integration.

`GET /v1/integrations/{id}` runs one statement on a pooled connection (the row and its
merchant ids, in position order, in one round trip; the connection goes back to the pool
without asyncpg's default reset, which would be a second round trip), builds the contract's
representation and encodes it with orjson. No authentication, no scope, no framework: the
floor under cbstop's GET one on the same database, server and workers. Reads CBSTOP_DATABASE_URL.

    CBSTOP_DATABASE_URL=postgresql://... python -m uvicorn bench.refs.bare_get:app --workers 2
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import asyncpg
import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PREFIX = "/v1/integrations/"
SQL = """
SELECT i.id, i.organisation_id, i.name, i.type, i.status,
       ARRAY(SELECT m.merchant_id FROM integration_merchants m
             WHERE m.integration_id = i.id ORDER BY m.position) AS merchant_ids
FROM integrations i
WHERE i.id = $1
"""
JSON = [(b"content-type", b"application/json")]
NOT_FOUND = b'{"errors":[{"code":"NOT_FOUND","message":"Not found"}]}'

_pool: list[asyncpg.Pool] = []


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's default reset on release: it costs a second round trip per request."""


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [*JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                url = os.environ["CBSTOP_DATABASE_URL"]
                pool = asyncpg.create_pool(
                    url, min_size=2, max_size=10, reset=_no_reset, server_settings={"jit": "off"}
                )
                _pool.append(await pool)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for pool in _pool:
                    await pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path: str = scope["path"]
    if not path.startswith(PREFIX):
        await _respond(send, 200 if path == "/healthz" else 404, b"{}")
        return
    row = await _pool[0].fetchrow(SQL, path[len(PREFIX) :].rstrip("/"))
    if row is None:
        await _respond(send, 404, NOT_FOUND)
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
    await _respond(send, 200, body)
