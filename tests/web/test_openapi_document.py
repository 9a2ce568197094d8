"""The served OpenAPI document, as a reader or a tool meets it: the specification's examples
for requests and answers, the ability each operation needs, tags, and each path's 405s.

The oracle for the examples is the specification (integrations-api.md, Examples 1-5),
written out here once as the integration it shows (Example 4) and the changes the other
examples make to it; the 405s are checked against what the server actually answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # no stubs
from starlette.testclient import TestClient

from cbstop.auth.keys import READ, WRITE
from cbstop.web import endpoints
from tests.integrations.helpers import (
    openapi_operation,
    openapi_resolve,
    openapi_response,
)
from tests.support import DatabaseMaker, api_client
from tests.test_spec_examples import ORDERS, STRIPE  # as the specification prints them

LIST = "/v1/integrations"
ONE = "/v1/integrations/{integration_id}"
OPERATIONS = {
    ("get", LIST): ("List integrations", READ),
    ("post", LIST): ("Create integration", WRITE),
    ("get", ONE): ("Get integration by ID", READ),
    ("patch", ONE): ("Update integration", WRITE),
}
METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def served(
    database_maker: DatabaseMaker,
) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    """A client on the real app, and the document it serves (the same on either database)."""
    with database_maker.database("sqlite") as url, api_client(url) as client:
        response = client.get(endpoints.OPENAPI_PATH)
        assert response.status_code == 200
        yield client, response.json()


@pytest.fixture(scope="module")
def document(served: tuple[TestClient, dict[str, Any]]) -> dict[str, Any]:
    return served[1]


def _json(answer: dict[str, Any]) -> dict[str, Any]:
    media: dict[str, Any] = answer["content"]["application/json"]
    return media


def _example_values(media: dict[str, Any]) -> dict[str, Any]:
    return {e["summary"]: e["value"] for e in media["examples"].values()}


def _parameter(document: dict[str, Any], method: str, path: str, name: str) -> dict[str, Any]:
    """A parameter of an operation, declared on it or on its path."""
    operation = openapi_operation(document, method, path)
    declared = [*document["paths"][path].get("parameters", []), *operation.get("parameters", [])]
    for parameter in declared:
        parameter = openapi_resolve(document, parameter)
        if parameter["name"] == name:
            return parameter
    raise KeyError(name)


def _check(document: dict[str, Any], schema: dict[str, Any], value: Any) -> None:
    """`value` is valid against `schema`, its references resolved in the document."""
    validator = Draft202012Validator({**schema, "components": document["components"]})
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(value)]
    assert errors == []


def test_the_four_operations_need_a_bearer_key_with_their_ability(
    document: dict[str, Any],
) -> None:
    assert document["components"]["securitySchemes"]["bearerAuth"]["type"] == "http"
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for (method, path), (summary, ability) in OPERATIONS.items():
        operation = openapi_operation(document, method, path)

        assert operation["summary"] == summary
        assert operation["tags"] == ["Integrations"]
        assert operation["security"] == [{"bearerAuth": []}]
        assert operation["x-required-abilities"] == [ability]
        assert operation["description"].endswith(
            f"Needs a key with the ability `{ability}` (`Authorization: Bearer cbs_...`)."
        )
        assert {"401", "403"} <= set(operation["responses"])


def test_the_tags_are_declared_in_the_order_the_page_shows_them(document: dict[str, Any]) -> None:
    assert [tag["name"] for tag in document["tags"]] == ["Integrations", "Method not allowed"]


def test_examples_1_and_2_list_with_a_partner_and_an_organisation_key(
    document: dict[str, Any],
) -> None:
    # The request: ?limit=20&offset=0.
    for name, value in (("limit", 20), ("offset", 0)):
        parameter = _parameter(document, "get", LIST, name)
        assert _example_values(parameter) == {"Examples 1 and 2": value}
        _check(document, parameter["schema"], value)

    media = _json(openapi_response(document, openapi_operation(document, "get", LIST), "200"))

    assert _example_values(media) == {
        "Example 1: a partner-level key": {"items": [ORDERS, STRIPE], "count": 2},
        "Example 2: an organisation-level key": {"items": [ORDERS], "count": 1},
    }


def test_example_3_creates_a_disabled_integration(document: dict[str, Any]) -> None:
    operation = openapi_operation(document, "post", LIST)
    request = operation["requestBody"]["content"]["application/json"]

    assert _example_values(request) == {
        "Example 3": {
            "organisation_id": "org_xyz456",
            "name": "Orders API Integration",
            "type": "CUSTOM_ORDERS",
            "status": "DISABLED",
            "merchant_ids": ["mrch_111", "mrch_222"],
        }
    }
    answer = _json(openapi_response(document, operation, "201"))
    assert _example_values(answer) == {"Example 3": {**ORDERS, "status": "DISABLED"}}


def test_example_4_gets_one_integration_and_its_404(document: dict[str, Any]) -> None:
    parameter = _parameter(document, "get", ONE, "integration_id")
    assert parameter["examples"]["example_4"] == {"summary": "Example 4", "value": "int_abc123"}
    operation = openapi_operation(document, "get", ONE)

    assert _example_values(_json(openapi_response(document, operation, "200"))) == {
        "Example 4": ORDERS
    }
    not_found = _json(openapi_response(document, operation, "404"))
    assert _example_values(not_found) == {
        "NOT_FOUND": {"errors": [{"code": "NOT_FOUND", "message": "Not found"}]}
    }


def test_example_5_renames_an_integration(document: dict[str, Any]) -> None:
    parameter = _parameter(document, "patch", ONE, "integration_id")
    assert parameter["examples"]["example_5"] == {"summary": "Example 5", "value": "int_abc123"}
    operation = openapi_operation(document, "patch", ONE)
    request = operation["requestBody"]["content"]["application/json"]

    assert _example_values(request) == {"Example 5": {"name": "Orders API Integration - EU"}}
    assert _example_values(_json(openapi_response(document, operation, "200"))) == {
        "Example 5": {**ORDERS, "name": "Orders API Integration - EU", "status": "DISABLED"}
    }


def test_the_specifications_common_error_examples_are_there(document: dict[str, Any]) -> None:
    create = openapi_operation(document, "post", LIST)

    examples = {
        status: _example_values(_json(openapi_response(document, create, status)))
        for status in ("401", "403", "404", "422")
    }

    assert examples["401"]["UNAUTHORISED"] == {
        "errors": [{"code": "UNAUTHORISED", "message": "Unauthorised"}]
    }
    assert examples["403"]["FORBIDDEN"] == {
        "errors": [{"code": "FORBIDDEN", "message": "Forbidden"}]
    }
    assert examples["404"]["NOT_FOUND"] == {
        "errors": [{"code": "NOT_FOUND", "message": "Not found"}]
    }
    assert examples["422"]["INVALID_MERCHANT_IDS"] == {
        "errors": [
            {
                "code": "INVALID_MERCHANT_IDS",
                "message": "One or more merchant_ids are invalid or inaccessible for this "
                "organisation",
            }
        ]
    }


def test_every_example_is_valid_against_its_own_schema(document: dict[str, Any]) -> None:
    checked = 0
    for item in document["paths"].values():
        for method, operation in item.items():
            if method == "parameters":
                continue
            medias = [
                openapi_resolve(document, answer).get("content", {}).get("application/json")
                for answer in operation["responses"].values()
            ]
            if "requestBody" in operation:
                medias.append(operation["requestBody"]["content"]["application/json"])
            for media in medias:
                for example in (media or {}).get("examples", {}).values():
                    _check(document, media["schema"], example["value"])
                    checked += 1
            parameters = [*item.get("parameters", []), *operation.get("parameters", [])]
            for parameter in parameters:
                for example in parameter.get("examples", {}).values():
                    _check(document, parameter["schema"], example["value"])
                    checked += 1
    assert checked > 50, f"only {checked} examples: is the walk broken?"
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("path", [LIST, ONE])
def test_each_other_method_of_a_path_is_documented_as_the_405_it_answers(
    served: tuple[TestClient, dict[str, Any]], path: str
) -> None:
    client, document = served
    item = document["paths"][path]
    accepted = {method for method, declared in OPERATIONS if declared == path}
    concrete = path.replace("{integration_id}", "int_abc123")

    for method in METHODS:
        if method in accepted:
            continue
        operation = item[method]
        answer = openapi_response(document, operation, "405")
        live = client.request(method.upper(), concrete)

        assert set(operation["responses"]) == {"405"}
        assert operation["tags"] == ["Method not allowed"]
        assert operation["security"] == []
        assert live.status_code == 405
        assert answer["headers"]["Allow"]["required"] is True
        assert answer["headers"]["Allow"]["schema"] == {
            "type": "string",
            "const": live.headers["Allow"],
        }
        assert live.json() == _example_values(_json(answer))["METHOD_NOT_ALLOWED"]
        _check(document, _json(answer)["schema"], live.json())


def test_the_service_endpoints_and_the_pages_files_stay_out_of_the_document(
    document: dict[str, Any],
) -> None:
    assert set(document["paths"]) == {LIST, ONE}
    assert endpoints.SWAGGER_UI_JS.startswith(endpoints.DOCS_PATH + "/")
