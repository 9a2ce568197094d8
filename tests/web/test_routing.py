"""The route table: one declaration gives dispatch, 405/Allow, HEAD, the document and the label.

These tests declare a trial operation beside the real ones and check that everything else
follows from that declaration alone, with no database (the trial handler answers by itself).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict
from starlette.testclient import TestClient

from cbstop import errors
from cbstop.app import route_table
from cbstop.settings import Settings
from cbstop.web.edge import Edge
from cbstop.web.http import Response, json_response
from cbstop.web.openapi import build_openapi
from cbstop.web.routing import Call, IntParam, Operation, RouteTable, Success
from cbstop.web.state import AppState


class Echo(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    word: str


class Echoed(BaseModel):
    thing_id: str
    word: str
    times: int


async def echo(call: Call) -> Response:
    """Echo the path parameter, the body and the query."""
    if call.body.word == "missing":
        raise errors.NotFound()
    return json_response(
        200, {"thing_id": call.params["thing_id"], "word": call.body.word, **call.query}
    )


async def peek(call: Call) -> Response:
    return json_response(200, {"thing_id": call.params["thing_id"]})


TRIAL = (
    Operation(
        "POST",
        "/v1/things/{thing_id}",
        echo,
        operation_id="echoThing",
        summary="Echo a thing",
        body=Echo,
        query=(IntParam("times", "How many times.", default=1, minimum=1, maximum=3),),
        errors=(errors.NotFound,),
        path_params={"thing_id": "The thing."},
        success=Success(200, "The echo.", Echoed),
        tags=("Trial",),
    ),
    Operation(
        "GET",
        "/v1/things/{thing_id}",
        peek,
        operation_id="peekThing",
        summary="Peek at a thing",
        success=Success(200, "The thing."),
        documented=False,
    ),
)


@pytest.fixture
def client() -> Iterator[TestClient]:
    """The trial operations on the edge, without a database (no lifespan)."""
    state = AppState(Settings(access_log=False))
    edge = Edge(RouteTable(TRIAL), state)
    yield TestClient(edge, raise_server_exceptions=False)


def _envelope(response: Any) -> list[tuple[str, str | None]]:
    return [(e["code"], e.get("field")) for e in response.json()["errors"]]


def test_a_declared_operation_is_dispatched_with_its_body_query_and_parameters(
    client: TestClient,
) -> None:
    response = client.post("/v1/things/t1/?times=3", json={"word": "hi"})

    assert response.status_code == 200
    assert response.json() == {"thing_id": "t1", "word": "hi", "times": 3}
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-request-id"]


def test_its_declared_checks_run_before_the_handler_in_the_contracts_order(
    client: TestClient,
) -> None:
    bad_query = client.post("/v1/things/t1?times=9", content=b"{", headers={"content-type": "x"})
    wrong_type = client.post("/v1/things/t1", content=b"{}", headers={"content-type": "text/plain"})
    bad_body = client.post("/v1/things/t1", json={"word": 5})
    refused = client.post("/v1/things/t1", json={"word": "missing"})

    assert (bad_query.status_code, _envelope(bad_query)) == (422, [("VALIDATION_ERROR", "times")])
    assert (wrong_type.status_code, _envelope(wrong_type)) == (
        415,
        [("UNSUPPORTED_MEDIA_TYPE", None)],
    )
    assert (bad_body.status_code, _envelope(bad_body)) == (422, [("VALIDATION_ERROR", "word")])
    assert (refused.status_code, _envelope(refused)) == (404, [("NOT_FOUND", None)])


def test_head_is_get_without_a_body_and_other_methods_are_405_with_allow(
    client: TestClient,
) -> None:
    head = client.head("/v1/things/t1")
    put = client.put("/v1/things/t1", json={})

    assert (head.status_code, head.content) == (200, b"")
    assert int(head.headers["content-length"]) == len(b'{"thing_id":"t1"}')
    assert put.status_code == 405
    assert _envelope(put) == [("METHOD_NOT_ALLOWED", None)]
    assert put.headers["allow"] == "POST, GET, HEAD"


@pytest.mark.parametrize("path", ["/v1/things", "/v1/things/", "/v1/things//", "/v1/things/a/b"])
def test_a_path_no_template_matches_is_404_in_the_envelope(client: TestClient, path: str) -> None:
    response = client.post(path, json={"word": "hi"})

    assert response.status_code == 404
    assert _envelope(response) == [("NOT_FOUND", None)]


def test_a_handler_defect_is_500_in_the_envelope_without_a_traceback() -> None:
    async def broken(call: Call) -> Response:
        raise RuntimeError("a bug")

    table = RouteTable([Operation("GET", "/boom", broken, "boom", "Boom", Success(200, "-"))])
    client = TestClient(Edge(table, AppState(Settings(access_log=False))))

    response = client.get("/boom")

    assert response.status_code == 500
    assert response.json() == {"errors": [{"code": "INTERNAL_ERROR", "message": "Internal error"}]}


def test_declaring_one_method_on_one_path_twice_is_refused() -> None:
    with pytest.raises(ValueError, match=re.escape("POST /v1/things/{thing_id} is declared twice")):
        RouteTable([*TRIAL, TRIAL[0]])


def test_the_document_describes_a_declared_operation_from_its_declaration_alone() -> None:
    document = build_openapi(RouteTable(TRIAL))

    item = document["paths"]["/v1/things/{thing_id}"]
    assert [p["name"] for p in item["parameters"]] == ["thing_id"]
    assert set(item) == {"parameters", "post", "put", "patch", "delete"}  # GET is undocumented
    op = item["post"]
    assert (op["operationId"], op["summary"], op["tags"]) == (
        "echoThing",
        "Echo a thing",
        ["Trial"],
    )
    assert op["security"] == []  # no ability declared: no key
    assert [p["name"] for p in op["parameters"]] == ["times"]
    assert set(op["responses"]) == {"200", "400", "404", "413", "415", "422", "431"}
    codes_422 = op["responses"]["422"]["content"]["application/json"]["schema"]["properties"]
    assert codes_422["errors"]["items"]["properties"]["code"]["enum"] == ["VALIDATION_ERROR"]
    assert set(op["responses"]["400"]["content"]["application/json"]["examples"]) == {
        "MALFORMED_REQUEST",
        "MALFORMED_JSON",
    }
    assert item["delete"]["responses"]["405"]["headers"]["Allow"]["required"] is True
    assert {"Echo", "Echoed", "ErrorEnvelope"} <= set(document["components"]["schemas"])


def test_every_error_code_in_the_services_document_is_one_its_error_classes_can_raise() -> None:
    table = route_table()
    document = build_openapi(table)
    raisable = {kind.code for op in table.operations for kind in op.raises()}
    raisable.add(errors.MethodNotAllowed.code)

    documented = {
        code
        for item in document["paths"].values()
        for method, op in item.items()
        if method != "parameters"
        for answer in op["responses"].values()
        if "allOf" in answer.get("content", {}).get("application/json", {}).get("schema", {})
        for code in answer["content"]["application/json"]["schema"]["properties"]["errors"][
            "items"
        ]["properties"]["code"]["enum"]
    }

    assert documented == raisable
