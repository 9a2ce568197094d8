"""The application factory: `create_app(settings)` gives the ASGI app."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cbstop import errors
from cbstop.auth.service import Authenticator
from cbstop.db.database import Database, open_database
from cbstop.observability.logging import log
from cbstop.observability.metrics import Metrics
from cbstop.settings import Settings
from cbstop.web.edge import Edge
from cbstop.web.openapi import build_openapi


class OrjsonResponse(JSONResponse):
    """JSON encoded with orjson."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class AppState:
    """What every request shares in one process."""

    db: Database
    authenticator: Authenticator

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.draining = False
        self._last_warning = 0.0

    def warn_unavailable(self, exc: Exception) -> None:
        """Log database trouble at most once a second, not once per request."""
        now = time.monotonic()
        if now - self._last_warning >= 1.0:
            self._last_warning = now
            cause = exc.__cause__ or exc
            log.warning("database unavailable: %s: %s", type(cause).__name__, cause)


def _envelope(exc: errors.ApiError) -> OrjsonResponse:
    return OrjsonResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def create_app(settings: Settings) -> Edge:
    """The service: API routes at the edge, service endpoints on FastAPI."""
    state = AppState(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.db = await open_database(settings.database_url, settings)
        state.authenticator = Authenticator(state.db, settings.key_secret, settings.key_cache_ttl)
        try:
            yield
        finally:
            await state.db.close()

    api = FastAPI(
        title="cbstop",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        default_response_class=OrjsonResponse,
    )
    api.router.redirect_slashes = False
    document = build_openapi()

    @api.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> OrjsonResponse:
        if exc.status_code == 405:
            allow = (exc.headers or {}).get("Allow", "GET")
            return _envelope(errors.MethodNotAllowed([m.strip() for m in allow.split(",")]))
        if exc.status_code == 404:
            return _envelope(errors.NotFound())
        return OrjsonResponse(
            {"errors": [{"code": "HTTP_ERROR", "message": str(exc.detail)}]},
            status_code=exc.status_code,
        )

    @api.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> OrjsonResponse:
        problems = [(".".join(map(str, e["loc"][1:])), e["msg"]) for e in exc.errors()]
        return _envelope(errors.ValidationFailed(problems))

    @api.exception_handler(errors.ApiError)
    async def api_error(_: Request, exc: errors.ApiError) -> OrjsonResponse:
        return _envelope(exc)

    @api.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """200 while the process runs."""
        return {"status": "ok"}

    @api.get("/readyz", include_in_schema=False)
    async def readyz() -> Any:
        """200 when the database answers and the process is not draining."""
        if state.draining:
            return _envelope(errors.ServiceUnavailable())
        try:
            await state.db.ping()
        except errors.ServiceUnavailable as exc:
            state.warn_unavailable(exc)
            return _envelope(exc)
        return {"status": "ready"}

    @api.get("/metrics", include_in_schema=False)
    async def metrics() -> PlainTextResponse:
        """Prometheus metrics of this process."""
        in_use, waiting = state.db.pool_stats()
        return PlainTextResponse(
            state.metrics.render(in_use, waiting), media_type="text/plain; version=0.0.4"
        )

    @api.get("/v1/openapi.json", include_in_schema=False)
    async def openapi() -> dict[str, Any]:
        """The OpenAPI 3.1 document of this API."""
        return document

    @api.get("/v1/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        """A page that renders the document."""
        return get_swagger_ui_html(openapi_url="/v1/openapi.json", title="cbstop API")

    edge = Edge(api, state)
    return edge
