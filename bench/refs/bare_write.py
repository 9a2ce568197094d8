"""Reference "bare write": a bare ASGI app running cbstop's own create statement on cbstop's pool.

`POST /v1/integrations` with cbstop's JSON body (`organisation_id`, `name`, `merchant_ids`,
`status` optional) runs `cbstop.integrations.sql_postgres.CREATE["organisation"]` with the
arguments `cbstop.integrations.repository.create_many` gives one organisation key's request
without an Idempotency-Key: the scope check, the merchant check, the integration, its merchant
rows, the two count increments and its `integration.created` event, one statement and one
durable commit, on a connection of cbstop's own pool (`bench/refs/pooled.py`). It answers 201
with the representation (orjson), its Location and ETag; 404 if the organisation is not found,
422 if a merchant is not the organisation's, 400 for a body it cannot read. No
authentication, no validation beyond reading the body, no framework: the ceiling of cbstop's
create on the same database, pool, server and workers. Reads CBSTOP_DATABASE_URL (and the
other CBSTOP_* settings).

The events it writes are numbered by whichever `cbstop serve` runs on the same database (the
sequencer numbers every process's events), as cbstop's own creates are.

    CBSTOP_DATABASE_URL=postgresql://... python -m uvicorn bench.refs.bare_write:app --workers 2
"""

from __future__ import annotations

import random
from typing import Any

import orjson

from bench.refs.pooled import NOT_FOUND, Pooled, Receive, Scope, Send, read_body, respond
from cbstop.db.database import Row
from cbstop.db.postgres import PostgresConnection, PostgresDatabase
from cbstop.db.tables import COUNT_SHARDS
from cbstop.events.record import new_event_id
from cbstop.integrations import sql_postgres
from cbstop.integrations.service import new_integration_id, now_micros
from cbstop.web.http import new_request_id

PATH = "/v1/integrations"
INVALID_MERCHANTS = b'{"errors":[{"code":"INVALID_MERCHANT_IDS","field":"merchant_ids"}]}'
UNREADABLE = b'{"errors":[{"code":"INVALID_BODY"}]}'
ETAG = [(b"etag", b'"1"')]  # a new integration's version
# The create's key and the answer to store under it: no Idempotency-Key (owner NULL).
NO_KEY = ([None], [None], [None], [None], [None], [None])

_pooled = Pooled()


async def _create(conn: PostgresConnection, new: dict[str, Any], event_data: str) -> Row:
    """cbstop's create statement for one create of an organisation key, no Idempotency-Key,
    as `repository.create_many` runs a batch of one: its row (organisation found, every
    merchant its own, then the stored answer's columns: NULL). The statement takes its
    creates as arrays, one place each (`sql_postgres._create`): here one place, and its
    merchants flat."""
    merchants: list[str] = new["merchant_ids"]
    rows = await conn.fetch(
        sql_postgres.CREATE["organisation"],
        [new["id"]],
        [new["organisation_id"]],
        [new["name"]],
        [new["status"]],
        [now_micros()],
        [new["organisation_id"]],  # the scope: an organisation key of this organisation
        *NO_KEY,
        [new_event_id()],
        [new_request_id()],
        [None],  # the event's Idempotency-Key
        ["organisation"],  # its actor type
        [event_data],
        [1] * len(merchants),  # every merchant is the first (only) create's
        list(range(len(merchants))),
        merchants,
        random.randrange(COUNT_SHARDS),
    )
    return rows[0]


async def _http(db: PostgresDatabase, scope: Scope, receive: Receive, send: Send) -> None:
    path: str = scope["path"]
    if path != PATH or scope["method"] != "POST":
        await respond(send, 200 if path == "/healthz" else 404, b"{}")
        return
    await create(db, receive, send)


app = _pooled.asgi(_http)


async def create(db: PostgresDatabase, receive: Receive, send: Send) -> None:
    """Answer `POST /v1/integrations`."""
    try:
        body = orjson.loads(await read_body(receive))
        integration_id = new_integration_id()
        new = {
            "id": integration_id,
            "organisation_id": str(body["organisation_id"]),
            "name": str(body["name"]),
            "type": "CUSTOM_ORDERS",
            "status": str(body.get("status", "ENABLED")),
            "merchant_ids": [str(m) for m in body["merchant_ids"]],
            "links": [{"rel": "self", "uri": f"{PATH}/{integration_id}"}],
        }
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        await respond(send, 400, UNREADABLE)
        return
    answer = orjson.dumps(new)
    async with db.connection() as conn:
        row = await _create(conn, new, (b'{"object":%b}' % answer).decode())
    if not row[0]:
        await respond(send, 404, NOT_FOUND)
    elif not row[1]:
        await respond(send, 422, INVALID_MERCHANTS)
    else:
        location = [(b"location", f"{PATH}/{integration_id}".encode())]
        await respond(send, 201, answer, [*location, *ETAG])
