"""HTTP for integrations: the four operations, declared once, and their handlers.

Each declaration says what the edge checks before the handler runs (key, ability, query,
body; CONTRACT 1.6) and what the OpenAPI document says; a handler only calls the service and
shapes the answer.
"""

from __future__ import annotations

from cbstop import errors
from cbstop.auth.keys import READ, WRITE
from cbstop.events.record import Origin, actor_type
from cbstop.integrations import examples, service
from cbstop.integrations.schemas import (
    IntegrationCreate,
    IntegrationOut,
    IntegrationPage,
    IntegrationUpdate,
    etag,
    represent,
)
from cbstop.web.http import (
    Response,
    answer_response,
    entity_tags,
    headers_joined,
    json_response,
    not_modified,
)
from cbstop.web.routing import Call, HeaderParam, IntParam, Operation, Success

COLLECTION = "/v1/integrations"
ITEM = "/v1/integrations/{integration_id}"
LIMIT = IntParam("limit", "Number of results per page.", default=20, minimum=1, maximum=100)
# Past the end of any scope by far, and with any limit still inside a 64-bit integer, which
# is what both databases' OFFSET takes.
OFFSET = IntParam("offset", "Number of results to skip.", default=0, minimum=0, maximum=10**18)
_ID = {"integration_id": "Integration ID."}
_TAGS = ("Integrations",)
_ETAG = {"ETag": 'The integration\'s entity tag (strong, e.g. `"3"`): send it in `If-Match`.'}
IF_NONE_MATCH = HeaderParam(
    "If-None-Match",
    "`*` or entity tags: 304 Not Modified if one matches the current `ETag` (weak comparison).",
)
IF_MATCH = HeaderParam(
    "If-Match",
    "`*` or strong entity tags: the update happens only if one matches the current `ETag`; "
    "otherwise 412 and nothing changes. Weak or malformed tags never match.",
)


async def list_integrations(call: Call) -> Response:
    """List the integrations the key can access, newest first."""
    count, items = await service.list_integrations(
        call.db, call.principal, limit=call.query["limit"], offset=call.query["offset"]
    )
    return json_response(200, {"items": [represent(i) for i in items], "count": count})


async def create_integration(call: Call) -> Response:
    """Create a CUSTOM_ORDERS integration."""
    answer, replayed = await service.create_integration(
        call.db, call.principal, call.body, origin(call), call.keyed
    )
    if not replayed:
        call.state.events_written()
    return answer_response(answer, replayed=replayed)


async def get_integration(call: Call) -> Response:
    """Retrieve one integration by id; 304 if If-None-Match names its current tag."""
    found = await service.get_integration(call.db, call.principal, call.params["integration_id"])
    tag = etag(found.version)
    wanted = entity_tags(headers_joined(call.scope, b"if-none-match"))
    # Weak comparison (RFC 9110 13.1.2): W/"3" matches "3".
    if isinstance(wanted, str) or (wanted is not None and any(t == tag for _, t in wanted)):
        return not_modified(tag)
    return json_response(200, represent(found), {"ETag": tag})


async def update_integration(call: Call) -> Response:
    """Rename and/or disable a CUSTOM_ORDERS integration."""
    answer, replayed = await service.update_integration(
        call.db,
        call.principal,
        call.params["integration_id"],
        call.body,
        origin(call),
        if_match=allowed_versions(headers_joined(call.scope, b"if-match")),
        keyed=call.keyed,
    )
    if not replayed:
        call.state.events_written()
    return answer_response(answer, replayed=replayed)


def origin(call: Call) -> Origin:
    """What the events of a write record of its request (CONTRACT 3.4)."""
    return Origin(
        call.request_id,
        call.keyed.key if call.keyed is not None else None,
        actor_type(call.principal.scope.kind),
    )


def allowed_versions(if_match: str | None) -> frozenset[int] | None:
    """The versions an If-Match allows: None for any (absent, or `*`); otherwise those of
    its strong tags that are ours (a weak or foreign tag never matches; ours are versions,
    far below 18 digits)."""
    tags = entity_tags(if_match)
    if tags is None or isinstance(tags, str):  # absent, or ANY_TAG
        return None
    return frozenset(
        int(tag[1:-1])
        for weak, tag in tags
        if not weak and tag[1:-1].isascii() and tag[1:-1].isdigit() and len(tag) <= 20
    )


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
        parameter_examples=examples.LIST_PARAMETERS,
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
        idempotent=True,
        body=IntegrationCreate,
        body_examples=examples.CREATE_REQUESTS,
        errors=(errors.DuplicateMerchantIds, errors.NotFound, errors.InvalidMerchantIds),
        success=Success(
            201,
            "Created (or, with `Idempotent-Replayed: true`, the answer stored under the "
            "`Idempotency-Key`).",
            IntegrationOut,
            headers={"Location": "The new integration's path.", **_ETAG},
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
        headers=(IF_NONE_MATCH,),
        errors=(errors.NotFound,),
        path_params=_ID,
        parameter_examples=examples.GET_PARAMETERS,
        success=Success(
            200,
            "The integration.",
            IntegrationOut,
            headers=_ETAG,
            examples=examples.GET_RESPONSES,
        ),
        not_modified="`If-None-Match` matches the current `ETag`: no body.",
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
        idempotent=True,
        headers=(IF_MATCH,),
        body=IntegrationUpdate,
        body_examples=examples.UPDATE_REQUESTS,
        errors=(
            errors.MissingUpdateFields,
            errors.NotFound,
            errors.PreconditionFailed,
            errors.InvalidIntegrationType,
        ),
        path_params=_ID,
        parameter_examples=examples.UPDATE_PARAMETERS,
        success=Success(
            200,
            "The updated integration (or, with `Idempotent-Replayed: true`, the answer stored "
            "under the `Idempotency-Key`).",
            IntegrationOut,
            headers=_ETAG,
            examples=examples.UPDATE_RESPONSES,
        ),
        tags=_TAGS,
    ),
)
