"""The served OpenAPI document, as a reader or a tool meets it: the specification's examples
for requests and answers, the ability each operation needs, tags, each path's 405s, and the
rate limits' fields and refusals (CONTRACT 3.3).

The oracle for the examples is the specification (integrations-api.md, Examples 1-5),
written out here once as the integration it shows (Example 4) and the changes the other
examples make to it; the 405s, and the rate limits' fields, are checked against what the
server actually answers.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # no stubs
from starlette.testclient import TestClient

from cbstop.auth.keys import READ, WRITE
from cbstop.errors import Overloaded, RateLimited, ServiceUnavailable
from cbstop.web import endpoints
from cbstop.web.openapi import build_openapi
from cbstop.web.routing import RouteTable
from tests.integrations.helpers import (
    auth,
    openapi_operation,
    openapi_resolve,
    openapi_response,
    world,
)
from tests.support import DatabaseMaker, api_client, bearer
from tests.test_spec_examples import ORDERS, STRIPE  # as the specification prints them

LIST = "/v1/integrations"
ONE = "/v1/integrations/{integration_id}"
OPERATIONS = {
    ("get", LIST): ("List integrations", READ),
    ("post", LIST): ("Create integration", WRITE),
    ("get", ONE): ("Get integration by ID", READ),
    ("patch", ONE): ("Update integration", WRITE),
}
EVENTS = "/v1/events"
EVENT = "/v1/events/{event_id}"
EVENT_OPERATIONS = {
    ("get", EVENTS): ("List events", READ),
    ("get", EVENT): ("Get event by ID", READ),
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
    assert [tag["name"] for tag in document["tags"]] == [
        "Integrations",
        "Events",
        "Method not allowed",
    ]


def test_the_events_operations_are_documented_with_their_parameters_and_link(
    document: dict[str, Any],
) -> None:
    for (method, path), (summary, ability) in EVENT_OPERATIONS.items():
        operation = openapi_operation(document, method, path)
        assert operation["summary"] == summary
        assert operation["tags"] == ["Events"]
        assert operation["x-required-abilities"] == [ability]
    assert _parameter(document, "get", EVENTS, "limit")["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "default": 20,
    }
    assert _parameter(document, "get", EVENTS, "type")["schema"] == {
        "type": "string",
        "enum": ["integration.created", "integration.updated"],
    }
    for name in ("starting_after", "integration_id"):
        assert _parameter(document, "get", EVENTS, name)["schema"] == {
            "type": "string",
            "minLength": 1,
            "maxLength": 255,
        }
    listed = openapi_operation(document, "get", EVENTS)
    assert {p["name"] for p in listed["parameters"]} == {
        "limit",
        "starting_after",
        "type",
        "integration_id",
    }
    link = openapi_response(document, listed, "200")["headers"]["Link"]
    assert link["required"] is False
    page = openapi_resolve(document, _json(openapi_response(document, listed, "200"))["schema"])
    assert set(page["required"]) == {"items", "has_more"}
    event = openapi_resolve(document, page["properties"]["items"]["items"])
    assert set(event["properties"]) == {
        "id",
        "type",
        "created_at",
        "organisation_id",
        "integration_id",
        "data",
        "request",
        "actor",
    }
    one = openapi_operation(document, "get", EVENT)
    assert set(one["responses"]) == {"200", "400", "401", "403", "404", "429", "431", "503"}


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
    assert set(document["paths"]) == {LIST, ONE, EVENTS, EVENT}
    assert endpoints.SWAGGER_UI_JS.startswith(endpoints.DOCS_PATH + "/")


# The answers of each operation that come once its key is accepted, and so carry the quota's
# fields; besides them every operation answers 401 (the failure budget's fields), 429 (the
# refusing policy's) and the HTTP parser's 431 (none), and the GETs the parser's 400 (none).
COUNTED = {
    ("get", LIST): {"200", "403", "422", "503"},
    ("post", LIST): {"201", "400", "403", "404", "409", "413", "415", "422", "503"},
    ("get", ONE): {"200", "304", "403", "404", "503"},
    ("patch", ONE): {"200", "400", "403", "404", "409", "412", "413", "415", "422", "503"},
    ("get", EVENTS): {"200", "403", "422", "503"},
    ("get", EVENT): {"200", "403", "404", "503"},
}
FIELDS = ("RateLimit-Policy", "RateLimit")
QUOTA_REFS = {name: {"$ref": f"#/components/headers/{name}"} for name in FIELDS}
AUTH_FAILURE_REFS = {
    name: {"$ref": f"#/components/headers/{name}.auth-failures"} for name in FIELDS
}


def _rate_fields(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer's documented rate limit fields, as declared (references unresolved)."""
    return {k: v for k, v in answer.get("headers", {}).items() if k.lower().startswith("ratelimit")}


def test_every_answer_of_the_api_operations_documents_the_rate_limit_fields_it_carries(
    document: dict[str, Any],
) -> None:
    limited = {
        (method, path)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method != "parameters" and "x-required-abilities" in operation
    }
    assert limited == set(OPERATIONS) | set(EVENT_OPERATIONS) == set(COUNTED)
    for (method, path), counted in COUNTED.items():
        responses = openapi_operation(document, method, path)["responses"]
        before_the_key = {"431"} | ({"400"} if method == "get" else set())

        assert set(responses) == counted | {"401", "429"} | before_the_key
        for status in counted:
            assert _rate_fields(responses[status]) == QUOTA_REFS, (method, path, status)
        assert _rate_fields(responses["401"]) == AUTH_FAILURE_REFS
        assert set(_rate_fields(responses["429"])) == set(FIELDS)
        for status in before_the_key:
            assert _rate_fields(responses[status]) == {}, (method, path, status)


def test_the_rate_limit_fields_are_declared_once_optional_and_exact(
    document: dict[str, Any],
) -> None:
    declared = document["components"]["headers"]
    assert set(declared) == {*FIELDS, *(f"{name}.auth-failures" for name in FIELDS)}
    for name, header in declared.items():
        policy = "auth-failures" if name.endswith(".auth-failures") else "default"
        example = header["example"]

        # Never required: absent while a limit is off or its store (Redis) does not answer.
        assert header["required"] is False
        assert re.fullmatch(header["schema"]["pattern"], example)
        assert example.startswith(f'"{policy}";')
        assert "served without limits" in header["description"]
        assert "CBSTOP_REDIS_URL" in header["description"]
    assert declared["RateLimit-Policy"]["example"] == '"default";q=100;w=60'
    assert declared["RateLimit-Policy.auth-failures"]["example"] == '"auth-failures";q=20;w=60'
    assert declared["RateLimit-Policy.auth-failures"]["description"].startswith("On a 401")
    assert declared["RateLimit.auth-failures"]["description"].startswith("On a 401")


def test_the_429_documents_retry_after_the_refusing_policy_and_both_refusals(
    document: dict[str, Any],
) -> None:
    for method, path in OPERATIONS:
        answer = openapi_response(document, openapi_operation(document, method, path), "429")
        headers = answer["headers"]

        assert set(headers) == {"Retry-After", *FIELDS}
        assert all(headers[name]["required"] is True for name in headers)
        assert {name: headers[name]["description"] for name in headers} == (
            RateLimited.documented_headers
        )
        # The default quota spent: a request returns every 0.6 s, so retry after 1 s.
        assert {name: headers[name]["example"] for name in headers} == {
            "Retry-After": "1",
            "RateLimit-Policy": '"default";q=100;w=60',
            "RateLimit": '"default";r=0;t=60',
        }
        for header in headers.values():
            assert re.fullmatch(header["schema"]["pattern"], header["example"])
        assert re.fullmatch(
            headers["RateLimit-Policy"]["schema"]["pattern"], '"auth-failures";q=20;w=60'
        )
        assert _example_values(_json(answer)) == {
            "RATE_LIMITED": {"errors": [{"code": "RATE_LIMITED", "message": RateLimited.message}]},
            "RATE_LIMITED (auth-failures)": {
                "errors": [{"code": "RATE_LIMITED", "message": RateLimited.AUTH_FAILURES}]
            },
        }


def test_the_503_is_the_database_and_the_worker_at_capacity_in_one_answer(
    document: dict[str, Any],
) -> None:
    for method, path in OPERATIONS:
        answer = openapi_response(document, openapi_operation(document, method, path), "503")

        assert Overloaded.description in answer["description"]
        assert ServiceUnavailable.description in answer["description"]
        assert "CBSTOP_MAX_IN_FLIGHT" in answer["description"]
        assert answer["headers"]["Retry-After"]["required"] is True
        assert _example_values(_json(answer)) == {
            "SERVICE_UNAVAILABLE (Overloaded)": {
                "errors": [{"code": "SERVICE_UNAVAILABLE", "message": Overloaded.message}]
            },
            "SERVICE_UNAVAILABLE": {
                "errors": [{"code": "SERVICE_UNAVAILABLE", "message": ServiceUnavailable.message}]
            },
        }


def test_operations_without_a_key_have_no_rate_limit_fields_nor_429() -> None:
    # The service endpoints, documented for once: they are not limited (CONTRACT 3.3).
    shown = [dataclasses.replace(op, documented=True) for op in endpoints.ROUTES]
    document = build_openapi(RouteTable(shown))

    answers = [
        answer
        for item in document["paths"].values()
        for method, operation in item.items()
        if method != "parameters"
        for answer in operation["responses"].values()
    ]
    assert len(answers) > 10
    assert all(_rate_fields(answer) == {} for answer in answers)
    assert all(
        status not in ("429", "401")
        for item in document["paths"].values()
        for method, op in item.items()
        if method != "parameters"
        for status in op["responses"]
    )


def test_the_fields_the_server_sends_are_the_ones_the_document_declares(
    document: dict[str, Any], database_maker: DatabaseMaker
) -> None:
    """With small limits, each kind of answer's fields: present where declared, valid against
    the declared schema, counting down; the 429s' bodies are the document's examples."""
    org_a1, read_only = auth("key_org_a1"), auth("key_read_only_a1")
    wrong = bearer("cbs_test_no_such_key_0000000000000000")

    def check(method: str, path: str, answer: Any) -> dict[str, str]:
        documented = openapi_response(
            document, openapi_operation(document, method, path), str(answer.status_code)
        )
        sent = {name: answer.headers[name] for name in FIELDS if name in answer.headers}
        assert set(sent) == set(_rate_fields(documented)), (method, path, answer.status_code)
        for name, value in sent.items():
            header = openapi_resolve(document, documented["headers"][name])
            assert re.fullmatch(header["schema"]["pattern"], value), (name, value)
        return sent

    with (
        database_maker.database("sqlite") as url,
        api_client(url, world("matrix"), rate_limit="3/60", auth_failure_limit="2/60") as client,
    ):
        listed = client.get(LIST, headers=org_a1)
        assert listed.status_code == 200
        assert check("get", LIST, listed) == {
            "RateLimit-Policy": '"default";q=3;w=60',
            "RateLimit": '"default";r=2;t=20',
        }
        # Another operation, another quota: each starts whole.
        missing = client.get(LIST + "/int_nowhere", headers=org_a1)
        forbidden = client.post(LIST, headers=read_only, json={})
        assert (missing.status_code, forbidden.status_code) == (404, 403)
        assert check("get", ONE, missing)["RateLimit"] == '"default";r=2;t=20'
        assert check("post", LIST, forbidden)["RateLimit"] == '"default";r=2;t=20'

        invalid = client.get(LIST + "?limit=0", headers=org_a1)
        last = client.get(LIST, headers=org_a1)
        refused = client.get(LIST, headers=org_a1)
        assert [a.status_code for a in (invalid, last, refused)] == [422, 200, 429]
        assert check("get", LIST, invalid)["RateLimit"].startswith('"default";r=1;t=')
        assert check("get", LIST, last)["RateLimit"].startswith('"default";r=0;t=')
        assert check("get", LIST, refused)["RateLimit-Policy"] == '"default";q=3;w=60'
        assert refused.headers["RateLimit"].startswith('"default";r=0;t=')
        assert int(refused.headers["Retry-After"]) >= 1
        answer_429 = _json(
            openapi_response(document, openapi_operation(document, "get", LIST), "429")
        )
        assert refused.json() == _example_values(answer_429)["RATE_LIMITED"]

        failures = [client.get(LIST, headers=wrong) for _ in range(2)]
        assert [a.status_code for a in failures] == [401, 401]
        first, second = (check("get", LIST, a) for a in failures)
        # The first failure spends one of two: the budget is whole again in 60 s / 2.
        assert first == {
            "RateLimit-Policy": '"auth-failures";q=2;w=60',
            "RateLimit": '"auth-failures";r=1;t=30',
        }
        assert second["RateLimit"].startswith('"auth-failures";r=0;t=')
        # The budget spent, the address is refused whatever key it sends.
        for headers in (wrong, read_only):
            blocked = client.get(LIST + "/int_a1_orders", headers=headers)
            assert blocked.status_code == 429
            assert check("get", ONE, blocked)["RateLimit-Policy"] == '"auth-failures";q=2;w=60'
            assert blocked.json() == _example_values(answer_429)["RATE_LIMITED (auth-failures)"]

        # Not limited: a path's other methods and the service endpoints carry no fields.
        for answer in (client.delete(LIST, headers=org_a1), client.get("/healthz")):
            assert answer.status_code in (405, 200)
            assert not {name.lower() for name in answer.headers} & {"ratelimit", "ratelimit-policy"}
