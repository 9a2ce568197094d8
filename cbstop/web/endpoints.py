"""The service's own endpoints: health, readiness, metrics, the OpenAPI document and its page.

None needs a key, none is rate limited, and none is in the OpenAPI document; they are in the
route table all the same, so dispatch, HEAD, 405 and the access log treat them like the rest.
"""

from __future__ import annotations

from cbstop.errors import ServiceUnavailable
from cbstop.web.errors import render
from cbstop.web.http import Response, json_response
from cbstop.web.routing import Call, Handler, Operation, Success

OPENAPI_PATH = "/v1/openapi.json"
DOCS_PATH = "/v1/docs"

_DOCS_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>cbstop API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>
SwaggerUIBundle({{url: "{OPENAPI_PATH}", dom_id: "#swagger-ui", deepLinking: true}});
</script>
</body>
</html>
""".encode()


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
    """Prometheus metrics of this process."""
    in_use, waiting = call.db.pool_stats()
    text = call.state.metrics.render(in_use, waiting)
    return Response(200, text.encode(), content_type=b"text/plain; version=0.0.4")


async def openapi(call: Call) -> Response:
    """The OpenAPI 3.1 document of this API."""
    return Response(200, call.state.openapi_json)


async def docs(call: Call) -> Response:
    """A page that renders the document."""
    return Response(200, _DOCS_PAGE, content_type=b"text/html; charset=utf-8")


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
)
