"""HTTP for integrations: parse, check the key, call the service, shape the answer.

The handlers run straight from the edge's route table (`cbstop.web.edge`), not through
FastAPI's per-request machinery: the hot paths cost what they must and no more. Each check
happens in the contract's order (CONTRACT 1.6): key, ability, body, schema, rules.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from pydantic import ValidationError

from cbstop.auth.keys import READ, WRITE
from cbstop.errors import ValidationFailed
from cbstop.integrations import service
from cbstop.integrations.schemas import IntegrationCreate, IntegrationUpdate, represent
from cbstop.web.context import RequestContext
from cbstop.web.http import Response, json_response, problems

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_LIST_PARAMS = {"limit": (1, MAX_LIMIT, DEFAULT_LIMIT), "offset": (0, None, 0)}


def _in_range(text: str, low: int, high: int | None) -> bool:
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        return False
    return int(text) >= low and (high is None or int(text) <= high)


def parse_list_query(query_string: bytes) -> tuple[int, int]:
    """`limit` and `offset`, each an integer in range, once; nothing else."""
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    seen: dict[str, list[str]] = {}
    for name, value in pairs:
        seen.setdefault(name, []).append(value)
    found: list[tuple[str, str]] = []
    values: dict[str, int] = {}
    for name, given in seen.items():
        bounds = _LIST_PARAMS.get(name)
        if bounds is None:
            found.append((name, "Unknown query parameter; no filters are supported"))
            continue
        low, high, _ = bounds
        what = f"an integer from {low} to {high}" if high else f"an integer of at least {low}"
        if len(given) > 1:
            found.append((name, "Give the parameter once"))
        elif not _in_range(given[0], low, high):
            found.append((name, f"Must be {what}"))
        else:
            values[name] = int(given[0])
    if found:
        raise ValidationFailed(found)
    return values.get("limit", DEFAULT_LIMIT), values.get("offset", 0)


def _parse(model: type[IntegrationCreate] | type[IntegrationUpdate], body: dict[str, Any]) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise problems(exc) from None


async def list_integrations(ctx: RequestContext) -> Response:
    """List the integrations the key can access, newest first."""
    principal = await ctx.principal()
    principal.require(READ)
    limit, offset = parse_list_query(ctx.scope["query_string"])
    count, items = await service.list_integrations(ctx.db, principal, limit, offset)
    return json_response(200, {"items": [represent(i) for i in items], "count": count})


async def create_integration(ctx: RequestContext) -> Response:
    """Create a CUSTOM_ORDERS integration."""
    principal = await ctx.principal()
    principal.require(WRITE)
    body: IntegrationCreate = _parse(IntegrationCreate, await ctx.json())
    created = await service.create_integration(ctx.db, principal, body)
    return json_response(201, represent(created), {"Location": f"/v1/integrations/{created.id}"})


async def get_integration(ctx: RequestContext, integration_id: str) -> Response:
    """Retrieve one integration by id."""
    principal = await ctx.principal()
    principal.require(READ)
    found = await service.get_integration(ctx.db, principal, integration_id)
    return json_response(200, represent(found))


async def update_integration(ctx: RequestContext, integration_id: str) -> Response:
    """Rename and/or disable a CUSTOM_ORDERS integration."""
    principal = await ctx.principal()
    principal.require(WRITE)
    body: IntegrationUpdate = _parse(IntegrationUpdate, await ctx.json())
    updated = await service.update_integration(ctx.db, principal, integration_id, body)
    return json_response(200, represent(updated))
