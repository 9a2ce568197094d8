"""The service's own endpoints: health, readiness, metrics, the OpenAPI document and its page
(with the page's Swagger UI files).

None needs a key, none is rate limited, and none is in the OpenAPI document; they are in the
route table all the same, so dispatch, HEAD, 405 and the access log treat them like the rest.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from importlib import resources

from cbstop.errors import ServiceUnavailable
from cbstop.web.errors import render
from cbstop.web.http import Response, json_response
from cbstop.web.routing import Call, Handler, Operation, Success

OPENAPI_PATH = "/v1/openapi.json"
DOCS_PATH = "/v1/docs"

# Swagger UI, vendored from npm (cbstop/web/static/swagger-ui/README.md): the page loads it
# from here, so it renders without internet and makes no third-party request at all.
_SWAGGER_UI = resources.files("cbstop.web").joinpath("static", "swagger-ui")
SWAGGER_UI_VERSION = _SWAGGER_UI.joinpath("VERSION").read_text().strip()
SWAGGER_UI_JS = f"{DOCS_PATH}/swagger-ui-bundle.js"
SWAGGER_UI_CSS = f"{DOCS_PATH}/swagger-ui.css"
# The files' URLs carry the version (the query is ignored) so an upgrade is not served stale.
_ASSET_CACHE = b"public, max-age=86400"
# validatorUrl null: no badge fetched from validator.swagger.io. The icon is empty so the
# browser does not ask for /favicon.ico.
_DOCS_SCRIPT = (
    f'SwaggerUIBundle({{url: "{OPENAPI_PATH}", dom_id: "#swagger-ui", '
    "deepLinking: true, validatorUrl: null});"
)
_DOCS_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>cbstop API</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{SWAGGER_UI_CSS}?v={SWAGGER_UI_VERSION}">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{SWAGGER_UI_JS}?v={SWAGGER_UI_VERSION}"></script>
<script>{_DOCS_SCRIPT}</script>
</body>
</html>
""".encode()
# The browser itself refuses anything from elsewhere; the one inline script is allowed by
# its hash. Swagger UI sets inline styles, and shows images as data: URLs.
_DOCS_POLICY = (
    "default-src 'none'; connect-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; script-src 'self' 'sha256-"
    + base64.b64encode(hashlib.sha256(_DOCS_SCRIPT.encode()).digest()).decode()
    + "'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
).encode()


async def healthz(call: Call) -> Response:
    """200 while the process runs."""
    return json_response(200, {"status": "ok"})


async def readyz(call: Call) -> Response:
    """200 when the process is not draining and the database answers one statement (on
    PostgreSQL: and accepts writes); otherwise 503 in the envelope, with Retry-After."""
    state = call.state
    if state.draining:
        return render(ServiceUnavailable())
    await state.db.ping()
    return json_response(200, {"status": "ready"})


async def metrics(call: Call) -> Response:
    """Prometheus metrics of every worker of this server, summed (this worker's pool fresh)."""
    in_use, waiting = call.db.pool_stats()
    text = call.state.metrics.render(in_use, waiting)
    return Response(200, text.encode(), content_type=b"text/plain; version=0.0.4")


async def openapi(call: Call) -> Response:
    """The OpenAPI 3.1 document of this API."""
    return Response(200, call.state.openapi_json)


async def docs(call: Call) -> Response:
    """A page that renders the document with the vendored Swagger UI."""
    return Response(
        200,
        _DOCS_PAGE,
        [(b"content-security-policy", _DOCS_POLICY)],
        content_type=b"text/html; charset=utf-8",
    )


@functools.cache
def _vendored(name: str) -> bytes:
    """One of Swagger UI's files, read from the package once."""
    return _SWAGGER_UI.joinpath(name).read_bytes()


def _asset(name: str, content_type: bytes) -> Handler:
    async def asset(call: Call) -> Response:
        return Response(
            200, _vendored(name), [(b"cache-control", _ASSET_CACHE)], content_type=content_type
        )

    asset.__doc__ = f"Swagger UI's {name} (vendored)."
    return asset


def _endpoint(path: str, handler: Handler, summary: str, status: str) -> Operation:
    return Operation(
        "GET",
        path,
        handler,
        operation_id=path.strip("/").replace("/", "_").replace(".", "_"),
        summary=summary,
        success=Success(200, status),
        documented=False,
    )


ROUTES = (
    _endpoint("/healthz", healthz, "Liveness", "The process runs."),
    _endpoint("/readyz", readyz, "Readiness", "The database answers."),
    _endpoint("/metrics", metrics, "Metrics", "Prometheus text exposition."),
    _endpoint(OPENAPI_PATH, openapi, "OpenAPI document", "The document."),
    _endpoint(DOCS_PATH, docs, "API documentation", "A page rendering the document."),
    _endpoint(
        SWAGGER_UI_JS,
        _asset("swagger-ui-bundle.js", b"text/javascript; charset=utf-8"),
        "Swagger UI script",
        "The vendored file.",
    ),
    _endpoint(
        SWAGGER_UI_CSS,
        _asset("swagger-ui.css", b"text/css; charset=utf-8"),
        "Swagger UI style sheet",
        "The vendored file.",
    ),
)
