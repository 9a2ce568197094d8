"""What a handler gets: the request's scope, the database, and lazy auth and body."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cbstop.auth.service import Authenticator, Principal
from cbstop.db.database import Database
from cbstop.web.http import Receive, Scope, header, read_json_object


@dataclass(slots=True)
class RequestContext:
    """One request, as the route handlers see it."""

    scope: Scope
    receive: Receive
    db: Database
    authenticator: Authenticator
    request_id: str
    principal_: Principal | None = field(default=None)

    async def principal(self) -> Principal:
        """The caller, or `Unauthorised`."""
        if self.principal_ is None:
            self.principal_ = await self.authenticator.authenticate(
                header(self.scope, b"authorization")
            )
        return self.principal_

    async def json(self) -> dict[str, Any]:
        """The body as a JSON object (415, 413, 400 otherwise)."""
        return await read_json_object(self.scope, self.receive)
