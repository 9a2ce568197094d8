"""What the database references share: cbstop's own pool, opened and closed by the ASGI
lifespan, and a bare answer.

The pool is `cbstop.db.postgres.PostgresDatabase` (on `cbstop.db.pool`) with the settings
`cbstop serve` reads from the same `CBSTOP_*` environment (pool size, timeouts, connection
lifetime, session settings), so a reference and cbstop differ by what runs on a connection,
not by how it is had: a ceiling. asyncpg's own pool was not one (GET one on this pool did
14.2k req/s against bare get's 11.5k on asyncpg's).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from cbstop.db.postgres import PostgresDatabase
from cbstop.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON: Headers = [(b"content-type", b"application/json")]
NOT_FOUND = b'{"errors":[{"code":"NOT_FOUND","message":"Not found"}]}'
# A request of a reference: the pool's database, then ASGI's scope, receive and send.
Http = Callable[[PostgresDatabase, Scope, Receive, Send], Awaitable[None]]


class Pooled:
    """The process's database, open between the lifespan's startup and shutdown."""

    def __init__(self) -> None:
        self._db: PostgresDatabase | None = None

    @property
    def db(self) -> PostgresDatabase:
        assert self._db is not None, "the lifespan has not started"
        return self._db

    def asgi(self, http: Http) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
        """A reference's ASGI app: the lifespan opens and closes this pool, and
        `http(db, scope, receive, send)` answers each request on it."""

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "lifespan":
                await self.lifespan(receive, send)
            elif scope["type"] == "http":
                await http(self.db, scope, receive, send)

        return app

    async def lifespan(self, receive: Receive, send: Send) -> None:
        """Serve the lifespan protocol: open the pool at startup (CBSTOP_DATABASE_URL and
        the other CBSTOP_* settings), close it at shutdown."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                settings = Settings()
                self._db = await PostgresDatabase.open(settings.database_url, settings)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._db is not None:
                    await self._db.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def respond(send: Send, status: int, body: bytes, headers: Headers | None = None) -> None:
    """One whole answer: JSON, its length, and `headers`."""
    sent = [*JSON, (b"content-length", str(len(body)).encode()), *(headers or ())]
    await send({"type": "http.response.start", "status": status, "headers": sent})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive) -> bytes:
    """The request's body, however many messages it came in."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)
