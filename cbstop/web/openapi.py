"""The OpenAPI 3.1 document, built from the route table alone.

Paths, methods, summaries, tags, parameters, bodies, success answers and examples (the
specification's, for requests and answers) come from each `Operation`, and so does the ability
a key needs (`x-required-abilities`, a sentence, and the bearer scheme); its error answers from
`Operation.raises()`, grouped by status, with the codes, descriptions and headers of the error
classes themselves. Every answer of an operation that needs a key documents the rate limits'
fields it carries (CONTRACT 3.3), declared once under `components/headers`: the quota's on
every answer given once the key was accepted, the failure budget's on the 401, the refusing
policy's on the 429 (its class's own). A known path's other methods are documented as 405 with
that path's exact `Allow`. Nothing here names a path or an error code.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from cbstop.errors import (
    ApiError,
    MalformedRequest,
    MethodNotAllowed,
    Overloaded,
    RateLimited,
    RequestHeaderFieldsTooLarge,
    Unauthorised,
)
from cbstop.ratelimit.policy import AUTH_FAILURES, QUOTA
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

# The rate limits' fields (draft-ietf-httpapi-ratelimit-headers-10) as `Policy.fields` writes
# them, declared once as components: the quota's, and the failure budget's (on the 401).
_HEADER_REF = "#/components/headers/{name}"
_POLICY = '^"{policy}";q=[1-9][0-9]*;w=[1-9][0-9]*$'
_LEFT = '^"{policy}";r=[0-9]+;t=[0-9]+$'
_EITHER = f"({QUOTA}|{AUTH_FAILURES})"
_ABSENT = (
    " Absent while that limit is off, and while the limits' store (Redis, with "
    "`CBSTOP_REDIS_URL`) does not answer within `CBSTOP_REDIS_TIMEOUT`: requests are then "
    "served without limits and without these fields."
)


def _field(description: str, pattern: str, example: str) -> dict[str, Any]:
    return {
        "description": description,
        "required": False,
        "schema": {"type": "string", "pattern": pattern},
        "example": example,
    }


RATE_LIMIT_HEADERS: dict[str, dict[str, Any]] = {
    "RateLimit-Policy": _field(
        "The quota this request counted against: the key owner's, for this operation (method "
        'and path; HEAD counts as GET), `"default";q=<requests>;w=<seconds>`; '
        '`"default";q=100;w=60` unless the server sets `CBSTOP_RATE_LIMIT`. On every answer to '
        "a request whose key was accepted, whatever its status. Not on answers given before "
        "the key was looked up: the HTTP parser's 400 and 431, and a 503 for a connection "
        "past `CBSTOP_MAX_CONNECTIONS`, a worker at capacity, or a key the database could not "
        "look up." + _ABSENT,
        _POLICY.format(policy=QUOTA),
        f'"{QUOTA}";q=100;w=60',
    ),
    "RateLimit": _field(
        "What is left of that quota after this request: "
        '`"default";r=<requests left>;t=<seconds until r is back to q>` (whole seconds, '
        "rounded up). The quota may be spent at once and returns steadily, one request every "
        "w/q seconds; past it a request gets 429 `RATE_LIMITED`. Sent with `RateLimit-Policy`."
        + _ABSENT,
        _LEFT.format(policy=QUOTA),
        f'"{QUOTA}";r=99;t=1',
    ),
    "RateLimit-Policy.auth-failures": _field(
        "On a 401: the budget of failed authentications it counted against, the client "
        "address's (the peer's, or the one a proxy the server trusts forwarded): "
        '`"auth-failures";q=<failures>;w=<seconds>`; `"auth-failures";q=20;w=60` unless the '
        "server sets `CBSTOP_AUTH_FAILURE_LIMIT`. Once it is spent, every request from the "
        "address, with any key, gets 429 `RATE_LIMITED` until part of it returns." + _ABSENT,
        _POLICY.format(policy=AUTH_FAILURES),
        f'"{AUTH_FAILURES}";q=20;w=60',
    ),
    "RateLimit.auth-failures": _field(
        "On a 401: what is left of the address's budget of failed authentications after this "
        'one, `"auth-failures";r=<failures left>;t=<seconds until r is back to q>`. At `r=0` '
        "its requests get 429 until part of the budget returns. Sent with `RateLimit-Policy`."
        + _ABSENT,
        _LEFT.format(policy=AUTH_FAILURES),
        f'"{AUTH_FAILURES}";r=19;t=3',
    ),
}
_QUOTA_FIELDS = {"RateLimit-Policy": "RateLimit-Policy", "RateLimit": "RateLimit"}
_AUTH_FAILURE_FIELDS = {
    "RateLimit-Policy": "RateLimit-Policy.auth-failures",
    "RateLimit": "RateLimit.auth-failures",
}
# The values an error class's own headers take, and an example of each (the 429's for the
# default quota, spent).
_HEADER_VALUES = {
    "Retry-After": ("^[1-9][0-9]*$", "1"),
    "RateLimit-Policy": (_POLICY.format(policy=_EITHER), f'"{QUOTA}";q=100;w=60'),
    "RateLimit": (_LEFT.format(policy=_EITHER), f'"{QUOTA}";r=0;t=60'),
}
# Refusals made before the key is looked up, so never with the quota's fields: the HTTP
# parser's (cbstop/web/protocol.py) and the edge's at capacity.
_BEFORE_THE_KEY = (MalformedRequest, RequestHeaderFieldsTooLarge, Overloaded)
# Other messages an error class sends, each shown as an example of its own.
_OTHER_MESSAGES: dict[type[ApiError], dict[str, str]] = {
    RateLimited: {AUTH_FAILURES: RateLimited.AUTH_FAILURES},
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
                'the envelope `{"errors": [{"code", "message", "field"?}]}`. Each operation '
                "is rate limited per key owner (CONTRACT 3.3): its answers carry "
                "`RateLimit-Policy` and `RateLimit`, and past the quota it answers 429 "
                "`RATE_LIMITED` with `Retry-After`."
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
            "headers": RATE_LIMIT_HEADERS,
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
    out["responses"] = {**_success(op), **_errors(op.raises(), limited=op.ability is not None)}
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
    if success.optional_headers:
        answer.setdefault("headers", {}).update(_headers(success.optional_headers, required=False))
    if op.idempotent:
        answer.setdefault("headers", {}).update(_headers(REPLAYED, required=False))
    out = {str(success.status): answer}
    if op.not_modified is not None:
        out["304"] = {"description": op.not_modified, "headers": _headers(success.headers)}
    if op.ability is not None:
        for each in out.values():
            each.setdefault("headers", {}).update(_refs(_QUOTA_FIELDS))
    return out


def _errors(kinds: tuple[type[ApiError], ...], *, limited: bool = False) -> dict[str, Any]:
    """One answer per status: the envelope, restricted to the codes of its classes; with
    `limited` (an operation that needs a key), the rate limits' fields each answer carries."""
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
                    "examples": _error_examples(group),
                }
            },
        }
        headers: dict[str, str] = {}
        for kind in group:
            headers.update(kind.documented_headers)
        if headers:
            answer["headers"] = _headers(headers)
        if limited:
            fields = _rate_fields(group)
            if fields:
                answer.setdefault("headers", {}).update(fields)
        out[str(status)] = answer
    return out


def _error_examples(group: list[type[ApiError]]) -> dict[str, Any]:
    """Each class's answer as the renderer writes it (and its other messages), by code; a
    class sharing its parent's code is named after itself, unless its answer is the same."""
    out: dict[str, Any] = {}
    for kind in group:
        shown = [("", envelope(kind.example()))]
        for label, message in _OTHER_MESSAGES.get(kind, {}).items():
            shown.append((label, {"errors": [{"code": kind.code, "message": message}]}))
        for label, value in shown:
            if any(value == given["value"] for given in out.values()):
                continue
            name = kind.code if "code" in vars(kind) else f"{kind.code} ({kind.__name__})"
            if label:
                name = f"{name} ({label})"
            out[name] = {"summary": name, "value": value}
    return out


def _rate_fields(group: list[type[ApiError]]) -> dict[str, Any]:
    """The rate limits' fields an error answer of a limited operation carries: the 401 the
    failure budget's; the 429 none here (its class documents the refusing policy's); one
    given before the key is looked up none; any other the quota's."""
    if any(issubclass(kind, RateLimited) for kind in group):
        return {}
    if any(issubclass(kind, Unauthorised) for kind in group):
        return _refs(_AUTH_FAILURE_FIELDS)
    if all(issubclass(kind, _BEFORE_THE_KEY) for kind in group):
        return {}
    return _refs(_QUOTA_FIELDS)


def _refs(fields: dict[str, str]) -> dict[str, Any]:
    return {
        name: {"$ref": _HEADER_REF.format(name=component)} for name, component in fields.items()
    }


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
    out: dict[str, Any] = {}
    for name, text in headers.items():
        header: dict[str, Any] = {"description": text, "schema": {"type": "string"}}
        if name in _HEADER_VALUES:
            pattern, header["example"] = _HEADER_VALUES[name]
            header["schema"]["pattern"] = pattern
        out[name] = {**header, "required": required}
    return out


def _examples(examples: dict[str, Example]) -> dict[str, Any]:
    return {name: {"summary": e.summary, "value": e.value} for name, e in examples.items()}


def _slug(template: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in template).strip("_")
