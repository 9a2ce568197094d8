"""The OpenAPI 3.1 document, built from the same models and error classes the code uses.

Each operation lists exactly the statuses its handler can return, each error with the
envelope schema and the codes it can carry, so the document cannot drift from the code.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from cbstop import errors
from cbstop.integrations.routes import DEFAULT_LIMIT, MAX_LIMIT
from cbstop.integrations.schemas import (
    IntegrationCreate,
    IntegrationOut,
    IntegrationPage,
    IntegrationUpdate,
)

# Any request can be refused by the HTTP parser before it reaches a route.
_AUTH = [errors.MalformedRequest, errors.Unauthorised, errors.Forbidden]
_BODY = [errors.UnsupportedMediaType, errors.PayloadTooLarge, errors.MalformedJson]
_UNAVAILABLE = [errors.ServiceUnavailable]
_HEADERS = {
    401: {"WWW-Authenticate": "Always `Bearer`."},
    405: {"Allow": "The methods the path accepts."},
    503: {"Retry-After": "Seconds to wait before retrying."},
}


def _error_response(status: int, codes: list[str], description: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {
            "application/json": {
                "schema": {
                    "allOf": [{"$ref": "#/components/schemas/ErrorEnvelope"}],
                    "properties": {
                        "errors": {"items": {"properties": {"code": {"enum": sorted(codes)}}}}
                    },
                }
            }
        },
    }
    if status in _HEADERS:
        out["headers"] = {
            name: {"description": text, "schema": {"type": "string"}, "required": True}
            for name, text in _HEADERS[status].items()
        }
    return out


def _errors(*kinds: type[errors.ApiError], business: list[str] | None = None) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for kind in kinds:
        by_status.setdefault(kind.status, []).append(kind.code)
    if business:
        by_status.setdefault(422, []).extend(business)
    descriptions = {
        400: "The request is not valid HTTP, or its body is not a valid JSON object.",
        401: "Missing, unknown or revoked API key.",
        403: "The key lacks the ability this operation needs.",
        404: "Not found, or outside the key's access scope (indistinguishable).",
        413: "The body is larger than 1 MiB.",
        415: "The body is not application/json.",
        422: "The request is invalid: one entry per problem, with `field`.",
        503: "The database is unavailable; retry after `Retry-After` seconds.",
    }
    return {
        str(status): _error_response(status, codes, descriptions[status])
        for status, codes in sorted(by_status.items())
    }


def _ok(status: int, schema: str, description: str, location: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }
    if location:
        out["headers"] = {
            "Location": {
                "description": "The new integration's path.",
                "schema": {"type": "string"},
                "required": True,
            }
        }
    return {str(status): out}


def _body(schema: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


_ID_PARAM = {
    "name": "integration_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "Integration ID.",
}


def build_openapi() -> dict[str, Any]:
    """The whole document."""
    _, defs = models_json_schema(
        [
            (IntegrationCreate, "validation"),
            (IntegrationUpdate, "validation"),
            (IntegrationOut, "serialization"),
            (IntegrationPage, "serialization"),
        ],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = dict(defs["$defs"])
    for name in ("IntegrationOut", "IntegrationPage", "Link"):
        schemas[name]["additionalProperties"] = False
    schemas["ErrorEnvelope"] = {
        "type": "object",
        "required": ["errors"],
        "additionalProperties": False,
        "properties": {
            "errors": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["code", "message"],
                    "additionalProperties": False,
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "field": {"type": "string"},
                    },
                },
            }
        },
    }
    list_op = {
        "operationId": "listIntegrations",
        "summary": "List integrations",
        "description": "Integrations of every organisation the key can access, newest first.",
        "parameters": [
            {
                "name": "limit",
                "in": "query",
                "schema": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_LIMIT,
                    "default": DEFAULT_LIMIT,
                },
                "description": "Number of results per page.",
            },
            {
                "name": "offset",
                "in": "query",
                "schema": {"type": "integer", "minimum": 0, "default": 0},
                "description": "Number of results to skip.",
            },
        ],
        "responses": {
            **_ok(200, "IntegrationPage", "A page, and the total in the key's scope."),
            **_errors(*_AUTH, errors.ValidationFailed, *_UNAVAILABLE),
        },
    }
    create_op = {
        "operationId": "createIntegration",
        "summary": "Create integration",
        "requestBody": _body("IntegrationCreate"),
        "responses": {
            **_ok(201, "IntegrationOut", "Created.", location=True),
            **_errors(
                *_AUTH,
                *_BODY,
                errors.ValidationFailed,
                errors.NotFound,
                *_UNAVAILABLE,
                business=["DUPLICATE_MERCHANT_IDS", "INVALID_MERCHANT_IDS"],
            ),
        },
    }
    get_op = {
        "operationId": "getIntegration",
        "summary": "Get integration by ID",
        "parameters": [_ID_PARAM],
        "responses": {
            **_ok(200, "IntegrationOut", "The integration."),
            **_errors(*_AUTH, errors.NotFound, *_UNAVAILABLE),
        },
    }
    update_op = {
        "operationId": "updateIntegration",
        "summary": "Update integration",
        "description": "Rename and/or disable a CUSTOM_ORDERS integration.",
        "parameters": [_ID_PARAM],
        "requestBody": _body("IntegrationUpdate"),
        "responses": {
            **_ok(200, "IntegrationOut", "The updated integration."),
            **_errors(
                *_AUTH,
                *_BODY,
                errors.ValidationFailed,
                errors.NotFound,
                *_UNAVAILABLE,
                business=["MISSING_UPDATE_FIELDS", "INVALID_INTEGRATION_TYPE"],
            ),
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cbstop — ChargebackStop Integrations API",
            "version": "1.0.0",
            "description": (
                "Manage integrations used by ChargebackStop APIs. Every path also answers "
                "with a trailing slash. Every error uses the envelope "
                '`{"errors": [{"code", "message", "field"?}]}`.'
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": {
            "/v1/integrations": {"get": list_op, "post": create_op},
            "/v1/integrations/{integration_id}": {"get": get_op, "patch": update_op},
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key: `Authorization: Bearer cbs_...`.",
                }
            },
        },
    }
