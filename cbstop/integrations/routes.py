"""HTTP for integrations: the four operations, declared once, and their handlers.

Each declaration says what the edge checks before the handler runs (key, ability, query,
body; CONTRACT 1.6) and what the OpenAPI document says; a handler only calls the service and
shapes the answer.
"""

from __future__ import annotations

from cbstop import errors
from cbstop.auth.keys import READ, WRITE
from cbstop.integrations import examples, service
from cbstop.integrations.schemas import (
    IntegrationCreate,
    IntegrationOut,
    IntegrationPage,
    IntegrationUpdate,
    represent,
)
from cbstop.web.http import Response, json_response
from cbstop.web.routing import Call, IntParam, Operation, Success

COLLECTION = "/v1/integrations"
ITEM = "/v1/integrations/{integration_id}"
LIMIT = IntParam("limit", "Number of results per page.", default=20, minimum=1, maximum=100)
# Past the end of any scope by far, and with any limit still inside a 64-bit integer, which
# is what both databases' OFFSET takes.
OFFSET = IntParam("offset", "Number of results to skip.", default=0, minimum=0, maximum=10**18)
_ID = {"integration_id": "Integration ID."}
_TAGS = ("Integrations",)


async def list_integrations(call: Call) -> Response:
    """List the integrations the key can access, newest first."""
    count, items = await service.list_integrations(
        call.db, call.principal, limit=call.query["limit"], offset=call.query["offset"]
    )
    return json_response(200, {"items": [represent(i) for i in items], "count": count})


async def create_integration(call: Call) -> Response:
    """Create a CUSTOM_ORDERS integration."""
    created = await service.create_integration(call.db, call.principal, call.body)
    return json_response(201, represent(created), {"Location": f"{COLLECTION}/{created.id}"})


async def get_integration(call: Call) -> Response:
    """Retrieve one integration by id."""
    found = await service.get_integration(call.db, call.principal, call.params["integration_id"])
    return json_response(200, represent(found))


async def update_integration(call: Call) -> Response:
    """Rename and/or disable a CUSTOM_ORDERS integration."""
    updated = await service.update_integration(
        call.db, call.principal, call.params["integration_id"], call.body
    )
    return json_response(200, represent(updated))


ROUTES = (
    Operation(
        "GET",
        COLLECTION,
        list_integrations,
        operation_id="listIntegrations",
        summary="List integrations",
        description="Integrations of every organisation the key can access, newest first "
        "(creation time, then id). `count` is the total in the key's scope.",
        ability=READ,
        query=(LIMIT, OFFSET),
        success=Success(
            200,
            "A page, and the total in the key's scope.",
            IntegrationPage,
            examples=examples.LIST_RESPONSES,
        ),
        tags=_TAGS,
    ),
    Operation(
        "POST",
        COLLECTION,
        create_integration,
        operation_id="createIntegration",
        summary="Create integration",
        description="Create a `CUSTOM_ORDERS` integration of an organisation the key can "
        "access, linked to merchants of that organisation.",
        ability=WRITE,
        body=IntegrationCreate,
        body_examples=examples.CREATE_REQUESTS,
        errors=(errors.DuplicateMerchantIds, errors.NotFound, errors.InvalidMerchantIds),
        success=Success(
            201,
            "Created.",
            IntegrationOut,
            headers={"Location": "The new integration's path."},
            examples=examples.CREATE_RESPONSES,
        ),
        tags=_TAGS,
    ),
    Operation(
        "GET",
        ITEM,
        get_integration,
        operation_id="getIntegration",
        summary="Get integration by ID",
        ability=READ,
        errors=(errors.NotFound,),
        path_params=_ID,
        success=Success(200, "The integration.", IntegrationOut, examples=examples.GET_RESPONSES),
        tags=_TAGS,
    ),
    Operation(
        "PATCH",
        ITEM,
        update_integration,
        operation_id="updateIntegration",
        summary="Update integration",
        description="Rename and/or disable a `CUSTOM_ORDERS` integration: at least one of "
        "`name` and `status` (`DISABLED` only).",
        ability=WRITE,
        body=IntegrationUpdate,
        body_examples=examples.UPDATE_REQUESTS,
        errors=(errors.MissingUpdateFields, errors.NotFound, errors.InvalidIntegrationType),
        path_params=_ID,
        success=Success(
            200, "The updated integration.", IntegrationOut, examples=examples.UPDATE_RESPONSES
        ),
        tags=_TAGS,
    ),
)
