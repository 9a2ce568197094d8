"""The application factory: `create_app(settings)` gives the ASGI app.

The route table is every resource's declared operations plus the service's own endpoints;
the edge dispatches from it and the OpenAPI document is built from it, once.
"""

from __future__ import annotations

import orjson

from cbstop.events import routes as events
from cbstop.integrations import routes as integrations
from cbstop.settings import Settings
from cbstop.web import endpoints
from cbstop.web.edge import Edge
from cbstop.web.openapi import build_openapi
from cbstop.web.routing import RouteTable
from cbstop.web.state import AppState

__all__ = ["AppState", "create_app", "route_table"]


def route_table() -> RouteTable:
    """Every operation the service answers."""
    return RouteTable([*integrations.ROUTES, *events.ROUTES, *endpoints.ROUTES])


def create_app(settings: Settings) -> Edge:
    """The service over the database `settings` names."""
    table = route_table()
    state = AppState(settings)
    state.openapi_json = orjson.dumps(build_openapi(table))
    return Edge(table, state)
