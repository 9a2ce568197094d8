"""HTTP for events (CONTRACT 3.4): the two read operations, declared once, and their handlers.

Events are read with the scope of integrations (`integrations:read`): a key sees the events
of the organisations whose integrations it can see.
"""

from __future__ import annotations

from urllib.parse import quote

from cbstop import errors
from cbstop.auth.keys import READ
from cbstop.events import examples, service
from cbstop.events.record import EVENT_TYPES
from cbstop.events.schemas import EventOut, EventPage, encode, represent
from cbstop.integrations.rules import ID_MAX_LENGTH
from cbstop.web.http import Response, json_response
from cbstop.web.routing import Call, IntParam, Operation, StrParam, Success

COLLECTION = "/v1/events"
ITEM = "/v1/events/{event_id}"
_TAGS = ("Events",)

LIMIT = IntParam("limit", "Number of events per page.", default=20, minimum=1, maximum=100)
STARTING_AFTER = StrParam(
    "starting_after",
    "An event id, from a page's last item: the next page holds the events older than it. An "
    "id that is not an event the key can see is 422 `VALIDATION_ERROR` on this parameter.",
    max_length=ID_MAX_LENGTH,
)
TYPE = StrParam("type", "Only events of this type.", max_length=32, allowed=EVENT_TYPES)
INTEGRATION_ID = StrParam(
    "integration_id",
    "Only this integration's events (none if it has none the key can see).",
    max_length=ID_MAX_LENGTH,
)
# The filters a next page keeps, in the order its link names them.
_KEPT = ("type", "integration_id")
LINK = {
    "Link": 'Only when `has_more`: `</v1/events?limit=N&starting_after=evt_...>; rel="next"`, '
    "the next page's path (the same `limit` and filters, values percent-encoded)."
}


async def list_events(call: Call) -> Response:
    """List the events of every organisation the key can access, newest first."""
    limit: int = call.query["limit"]
    page = await service.list_events(
        call.db,
        call.principal,
        limit=limit,
        starting_after=call.query["starting_after"],
        type_=call.query["type"],
        integration_id=call.query["integration_id"],
    )
    body = {"items": [represent(e) for e in page.events], "has_more": page.has_more}
    headers = None
    if page.has_more:
        headers = {"Link": next_link(limit, page.events[-1].id, call.query)}
    return json_response(200, body, headers)


def next_link(limit: int, last_id: str, query: dict[str, object]) -> str:
    """The `Link` field naming the page after the one that ends with event `last_id`."""
    parts = [f"limit={limit}", f"starting_after={quote(last_id, safe='')}"]
    parts += [f"{name}={quote(str(query[name]), safe='')}" for name in _KEPT if query[name]]
    return f'<{COLLECTION}?{"&".join(parts)}>; rel="next"'


async def get_event(call: Call) -> Response:
    """Retrieve one event by id."""
    found = await service.get_event(call.db, call.principal, call.params["event_id"])
    return Response(200, encode(found))


ROUTES = (
    Operation(
        "GET",
        COLLECTION,
        list_events,
        operation_id="listEvents",
        summary="List events",
        description="The audit trail: one event per create and per PATCH that changed a value, "
        "of every organisation the key can access, newest first (the order the changes "
        "committed in). Page with `starting_after`, or follow the `Link` header. On "
        "PostgreSQL an event is listed a few milliseconds after the write's answer, once its "
        "place in that order is settled.",
        ability=READ,
        query=(LIMIT, STARTING_AFTER, TYPE, INTEGRATION_ID),
        parameter_examples=examples.LIST_PARAMETERS,
        success=Success(
            200,
            "A page, newest first, and whether older events follow.",
            EventPage,
            optional_headers=LINK,
            examples=examples.LIST_RESPONSES,
        ),
        tags=_TAGS,
    ),
    Operation(
        "GET",
        ITEM,
        get_event,
        operation_id="getEvent",
        summary="Get event by ID",
        ability=READ,
        errors=(errors.NotFound,),
        path_params={"event_id": "Event ID."},
        parameter_examples=examples.GET_PARAMETERS,
        success=Success(200, "The event.", EventOut, examples=examples.GET_RESPONSES),
        tags=_TAGS,
    ),
)
