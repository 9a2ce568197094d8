"""The outermost layer of every HTTP request.

It gives each request an id, sends `X-Request-Id` and `Cache-Control: no-store` on every
answer, turns every error into the envelope, writes the access line and the metrics, and
runs the API's own routes from a small table; everything else (service endpoints, unknown
paths, wrong methods) goes to FastAPI.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cbstop.errors import ApiError, MethodNotAllowed
from cbstop.integrations import routes
from cbstop.observability import logging as obs_logging
from cbstop.observability.logging import log
from cbstop.web.context import RequestContext
from cbstop.web.http import Receive, Response, Scope, Send, json_response, request_id

Handler = Callable[..., Awaitable[Response]]
COLLECTION = "/v1/integrations"
ITEM = "/v1/integrations/{integration_id}"


@dataclass(frozen=True)
class Route:
    """The handlers of one path template, by method."""

    template: str
    methods: dict[str, Handler]

    @property
    def allow(self) -> list[str]:
        allowed = list(self.methods)
        if "GET" in allowed:
            allowed.insert(allowed.index("GET") + 1, "HEAD")
        return allowed


API_ROUTES = {
    COLLECTION: Route(
        COLLECTION, {"GET": routes.list_integrations, "POST": routes.create_integration}
    ),
    ITEM: Route(ITEM, {"GET": routes.get_integration, "PATCH": routes.update_integration}),
}


def match(path: str) -> tuple[Route, tuple[str, ...]] | None:
    """The API route for a path (with or without a trailing slash) and its parameters."""
    if path.endswith("/"):
        path = path[:-1]
    if path == COLLECTION:
        return API_ROUTES[COLLECTION], ()
    prefix = COLLECTION + "/"
    if path.startswith(prefix):
        rest = path[len(prefix) :]
        if rest and "/" not in rest:
            return API_ROUTES[ITEM], (rest,)
    return None


def error_response(exc: ApiError) -> Response:
    """The envelope for an API error."""
    return json_response(exc.status, exc.body(), exc.headers)


INTERNAL = json_response(500, {"errors": [{"code": "INTERNAL_ERROR", "message": "Internal error"}]})


class Edge:
    """ASGI: wraps the FastAPI app `inner`."""

    def __init__(self, inner: Any, state: Any) -> None:
        self.inner = inner
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        start = time.perf_counter()
        rid = request_id(scope)
        state = self.state
        method: str = scope["method"]
        found = match(scope["path"])
        ctx: RequestContext | None = None
        if found is None:
            status, route = await self._framework(scope, receive, send, rid)
        else:
            api_route, params = found
            route = api_route.template
            ctx = RequestContext(scope, receive, state.db, state.authenticator, rid)
            response = await self._api(ctx, api_route, method, params)
            status = response.status
            await _send(send, response, rid, head=method == "HEAD")
        duration = time.perf_counter() - start
        state.metrics.observe(method, route, status, duration)
        if state.settings.access_log:
            principal = ctx.principal_ if ctx is not None else None
            obs_logging.access_line(
                request_id=rid,
                method=method,
                route=route,
                status=status,
                duration=duration,
                key_id=principal.key_id if principal else None,
                owner=principal.owner if principal else None,
            )

    async def _api(
        self, ctx: RequestContext, route: Route, method: str, params: tuple[str, ...]
    ) -> Response:
        handler = route.methods.get("GET" if method == "HEAD" else method)
        try:
            if handler is None:
                raise MethodNotAllowed(route.allow)
            return await handler(ctx, *params)
        except ApiError as exc:
            if exc.status == 503:
                self.state.warn_unavailable(exc)
            return error_response(exc)
        except Exception:
            log.exception("unhandled error in %s %s", method, route.template)
            return INTERNAL

    async def _framework(
        self, scope: Scope, receive: Receive, send: Send, rid: str
    ) -> tuple[int, str]:
        """Pass the request to FastAPI, adding our headers; (status, route template)."""
        sent: dict[str, int] = {}

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), *_common(rid)]
            await send(message)

        try:
            await self.inner(scope, receive, send_with_headers)
        except Exception:
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if "status" not in sent:
                await _send(send, INTERNAL, rid)
                sent["status"] = 500
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        return sent.get("status", 500), template


def _common(rid: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-request-id", rid.encode()), (b"cache-control", b"no-store")]


async def _send(send: Send, response: Response, rid: str, *, head: bool = False) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(response.body)).encode()),
        *_common(rid),
        *response.headers,
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else response.body})
