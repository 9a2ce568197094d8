"""Dispatch cost per request, in-process: cbstop's route table and edge vs Starlette's Router.

The route table sits on our own ASGI edge rather than on Starlette's routing because of
this measurement (docs/architecture.md). Both answer GET /v1/integrations/{id} with the same
small JSON body, no database; ours includes what the edge always does (request id, metrics,
common headers), Starlette's only routing and its `Response`.

    .venv/bin/python -m bench.dispatch
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response as StarletteResponse
from starlette.routing import Route

from cbstop.app import route_table
from cbstop.settings import Settings
from cbstop.web.edge import Edge
from cbstop.web.http import Response, json_response
from cbstop.web.routing import Call, Operation, RouteTable
from cbstop.web.state import AppState

BODY = {"id": "int_abc123", "organisation_id": "org_xyz456", "name": "Orders"}
PATH = "/v1/integrations/int_abc123"


async def _ours(call: Call) -> Response:
    return json_response(200, BODY)


async def _theirs(request: Request) -> StarletteResponse:
    return StarletteResponse(orjson.dumps(BODY), media_type="application/json")


def edge() -> Edge:
    """cbstop's real route table, every handler replaced by one that answers BODY."""
    ops = [
        Operation(op.method, op.path, _ours, op.operation_id, op.summary, op.success)
        for op in route_table().operations
    ]
    return Edge(RouteTable(ops), AppState(Settings(access_log=False)))


def starlette() -> Starlette:
    """The same paths on Starlette's Router."""
    routes = [
        Route(op.path, _theirs, methods=[m for m in ("GET", "POST", "PATCH") if m == op.method])
        for op in route_table().operations
    ]
    return Starlette(routes=routes)


def _scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"localhost"), (b"authorization", b"Bearer x")],
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
    }


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Any) -> None:
    return None


async def per_request(app: Any, n: int = 50_000) -> float:
    """Microseconds per request, after a warm-up."""
    for _ in range(2_000):
        await app(_scope(), _receive, _send)
    started = time.perf_counter()
    for _ in range(n):
        await app(_scope(), _receive, _send)
    return (time.perf_counter() - started) / n * 1e6


async def main() -> None:
    ours, theirs = edge(), starlette()
    for round_ in range(1, 4):
        a = await per_request(ours)
        b = await per_request(theirs)
        print(
            f"round {round_}: cbstop edge {a:.1f} µs/request, Starlette Router {b:.1f} µs/request"
        )


if __name__ == "__main__":
    asyncio.run(main())
