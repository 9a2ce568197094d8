"""The OpenAPI 3.1 document, built from the route table alone.

Paths, methods, summaries, tags, parameters, bodies, success answers and examples (the
specification's, for requests and answers) come from each `Operation`, and so does the ability
a key needs (`x-required-abilities`, a sentence, and the bearer scheme); its error answers from
`Operation.raises()`, grouped by status, with the codes, descriptions and headers of the error
classes themselves. A known path's other methods are documented as 405 with that path's exact
`Allow`. Nothing here names a path or an error code.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from cbstop.errors import ApiError, MethodNotAllowed
from cbstop.web.errors import envelope
from cbstop.web.routing import Example, Operation, PathItem, RouteTable

TITLE = "cbstop — ChargebackStop Integrations API"
NOT_ALLOWED_TAG = "Method not allowed"
# The methods a client might try on any path; those a path lacks are documented as 405.
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_REF = "#/components/schemas/{model}"
REPLAYED = {
    "Idempotent-Replayed": "`true` when this is the answer stored under the request's "
    "`Idempotency-Key`, replayed; absent on a fresh answer."
}

ENVELOPE_SCHEMA: dict[str, Any] = {
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


def build_openapi(table: RouteTable) -> dict[str, Any]:
    """The whole document."""
    paths: dict[str, Any] = {}
    for item in table.paths:
        documented = [op for op in item.operations.values() if op.documented]
        if not documented:
            continue
        entry: dict[str, Any] = {}
        path_params = {name: text for op in documented for name, text in op.path_params.items()}
        if path_params:
            # On the path, not each operation: its 405s take the same parameters.
            entry["parameters"] = [
                _parameter(
                    name,
                    "path",
                    {"type": "string"},
                    text,
                    [
                        op.parameter_examples[name]
                        for op in documented
                        if name in op.parameter_examples
                    ],
                    required=True,
                )
                for name, text in path_params.items()
            ]
        entry.update({op.method.lower(): _operation(op) for op in documented})
        for method in _METHODS:
            if method not in item.operations:
                entry[method.lower()] = _not_allowed(item, method)
        paths[item.template] = entry
    tags = dict.fromkeys(tag for op in table.operations if op.documented for tag in op.tags)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": "1.0.0",
            "description": (
                "Manage integrations used by ChargebackStop APIs. Every path also answers "
                "with a trailing slash, and HEAD wherever it answers GET. Every error uses "
                'the envelope `{"errors": [{"code", "message", "field"?}]}`.'
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "tags": [
            *({"name": tag} for tag in tags),
            {
                "name": NOT_ALLOWED_TAG,
                "description": "The methods a path does not accept: each answers 405, and "
                "`Allow` lists the methods it does accept.",
            },
        ],
        "paths": paths,
        "components": {
            "schemas": {**_schemas(table), "ErrorEnvelope": ENVELOPE_SCHEMA},
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key: `Authorization: Bearer cbs_...`.",
                }
            },
        },
    }


def _schemas(table: RouteTable) -> dict[str, Any]:
    """JSON Schemas of every input model (as validated) and output model (as sent)."""
    inputs = {op.body for op in table.operations if op.documented and op.body is not None}
    outputs = {
        op.success.model
        for op in table.operations
        if op.documented and op.success.model is not None
    }
    wanted: list[tuple[type[BaseModel], Any]] = [
        *((model, "validation") for model in sorted(inputs, key=lambda m: m.__name__)),
        *((model, "serialization") for model in sorted(outputs, key=lambda m: m.__name__)),
    ]
    _, defs = models_json_schema(wanted, ref_template=_REF)
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    # Answers carry exactly the fields their models name, nothing more.
    input_names = {model.__name__ for model in inputs}
    for name, schema in schemas.items():
        if name not in input_names and schema.get("type") == "object":
            schema["additionalProperties"] = False
    return schemas


def _operation(op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary}
    if op.description:
        out["description"] = op.description
    if op.tags:
        out["tags"] = list(op.tags)
    if op.ability is not None:
        # The abilities a key needs, for tools; the sentence, for readers.
        out["x-required-abilities"] = [op.ability]
        out["description"] = (f"{op.description}\n\n" if op.description else "") + (
            f"Needs a key with the ability `{op.ability}` (`Authorization: Bearer cbs_...`)."
        )
        out["security"] = [{"bearerAuth": []}]
    else:
        out["security"] = []
    examples = op.parameter_examples
    parameters = [
        _parameter(p.name, "query", p.schema(), p.description, _given(examples, p.name))
        for p in op.query
    ] + [
        _parameter(h.name, "header", {"type": "string"}, h.description, _given(examples, h.name))
        for h in op.request_headers
    ]
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        media: dict[str, Any] = {"schema": {"$ref": _REF.format(model=op.body.__name__)}}
        if op.body_examples:
            media["examples"] = _examples(op.body_examples)
        out["requestBody"] = {"required": True, "content": {"application/json": media}}
    out["responses"] = {**_success(op), **_errors(op.raises())}
    return out


def _success(op: Operation) -> dict[str, Any]:
    success = op.success
    answer: dict[str, Any] = {"description": success.description}
    if success.model is not None:
        media: dict[str, Any] = {"schema": {"$ref": _REF.format(model=success.model.__name__)}}
        if success.examples:
            media["examples"] = _examples(success.examples)
        answer["content"] = {"application/json": media}
    if success.headers:
        answer["headers"] = _headers(success.headers)
    if op.idempotent:
        answer.setdefault("headers", {}).update(_headers(REPLAYED, required=False))
    out = {str(success.status): answer}
    if op.not_modified is not None:
        out["304"] = {"description": op.not_modified, "headers": _headers(success.headers)}
    return out


def _errors(kinds: tuple[type[ApiError], ...]) -> dict[str, Any]:
    """One answer per status: the envelope, restricted to the codes of its classes."""
    by_status: dict[int, list[type[ApiError]]] = {}
    for kind in kinds:
        by_status.setdefault(kind.status, []).append(kind)
    out: dict[str, Any] = {}
    for status, group in sorted(by_status.items()):
        codes = sorted({kind.code for kind in group})
        answer: dict[str, Any] = {
            "description": " ".join(dict.fromkeys(kind.description for kind in group)),
            "content": {
                "application/json": {
                    "schema": {
                        "allOf": [{"$ref": _REF.format(model="ErrorEnvelope")}],
                        "properties": {
                            "errors": {"items": {"properties": {"code": {"enum": codes}}}}
                        },
                    },
                    "examples": {
                        kind.code: {"summary": kind.code, "value": envelope(kind.example())}
                        for kind in group
                    },
                }
            },
        }
        headers: dict[str, str] = {}
        for kind in group:
            headers.update(kind.documented_headers)
        if headers:
            answer["headers"] = _headers(headers)
        out[str(status)] = answer
    return out


def _not_allowed(item: PathItem, method: str) -> dict[str, Any]:
    allow = ", ".join(item.allow)
    responses = _errors((MethodNotAllowed,))
    # The path's own Allow, exactly as the edge sends it.
    responses["405"]["headers"]["Allow"]["schema"] = {"type": "string", "const": allow}
    return {
        "operationId": f"{method.lower()}_{_slug(item.template)}_not_allowed",
        "summary": f"Not allowed: this path accepts {allow}",
        "description": f"`{method}` is not a method of this path: 405, with `Allow: {allow}`.",
        "tags": [NOT_ALLOWED_TAG],
        "security": [],
        "responses": responses,
    }


def _parameter(
    name: str,
    where: str,
    schema: dict[str, Any],
    description: str,
    examples: list[Example],
    *,
    required: bool = False,
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "in": where, "schema": schema}
    if required:
        out["required"] = True
    out["description"] = description
    if examples:
        out["examples"] = {
            _slug(e.summary).lower(): {"summary": e.summary, "value": e.value} for e in examples
        }
    return out


def _given(examples: dict[str, Example], name: str) -> list[Example]:
    return [examples[name]] if name in examples else []


def _headers(headers: dict[str, str], *, required: bool = True) -> dict[str, Any]:
    return {
        name: {"description": text, "schema": {"type": "string"}, "required": required}
        for name, text in headers.items()
    }


def _examples(examples: dict[str, Example]) -> dict[str, Any]:
    return {name: {"summary": e.summary, "value": e.value} for name, e in examples.items()}


def _slug(template: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in template).strip("_")
