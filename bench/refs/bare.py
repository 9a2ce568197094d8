"""The benchmark's database references in one app: bare get and bare write on one pool.

`GET /v1/integrations/{id}` is bare get's (`bench/refs/bare_get.py`), `POST /v1/integrations`
bare write's (`bench/refs/bare_write.py`), both on one pool of cbstop's per worker, as cbstop
serves its reads and writes from one pool: one server process of the harness, measured as
two references, and no more PostgreSQL connections than one cbstop server holds (every
server of a run shares the database's `max_connections`).

    CBSTOP_DATABASE_URL=postgresql://... python -m uvicorn bench.refs.bare:app --workers 2
"""

from __future__ import annotations

from bench.refs import bare_get, bare_write
from bench.refs.pooled import Pooled, Receive, Scope, Send, respond
from cbstop.db.postgres import PostgresDatabase

_pooled = Pooled()


async def _http(db: PostgresDatabase, scope: Scope, receive: Receive, send: Send) -> None:
    path: str = scope["path"]
    if scope["method"] == "GET" and path.startswith(bare_get.PREFIX):
        await bare_get.get_one(db, path, send)
    elif scope["method"] == "POST" and path == bare_write.PATH:
        await bare_write.create(db, receive, send)
    else:
        await respond(send, 200 if path == "/healthz" else 404, b"{}")


app = _pooled.asgi(_http)
