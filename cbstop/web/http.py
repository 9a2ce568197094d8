"""The HTTP edges of a request, without a framework: headers, body, query, response.

Everything here answers a client mistake with its contract error (415, 413, 400, 422) and
never lets malformed input reach a service.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from cbstop.errors import MalformedJson, PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from cbstop.idempotency.keys import Answer

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ModelT = TypeVar("ModelT", bound=BaseModel)

MAX_BODY = 1024 * 1024
# Problems listed in one VALIDATION_ERROR answer; past it, one entry says how many more. A
# 1 MiB body of 110,000 unknown keys once made 110,004 entries (8.3 MB) and 0.65 s of work.
MAX_PROBLEMS = 100
# Integers longer than this are kept as text: no JSON field here is an integer, and Python
# refuses to parse more than 4300 digits.
_MAX_INT_DIGITS = 100
# Request ids issued here: a random per-process prefix and a counter, unique across processes
# and restarts and cheaper than a uuid4 per request.
_ID_PREFIX = secrets.token_hex(8) + "-"
_ID_COUNTER = itertools.count(1)
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


JSON = b"application/json"


@dataclass(slots=True)
class Response:
    """A whole answer: status, body, its media type, and headers beyond the common ones."""

    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    content_type: bytes = JSON
    # A write's answer, for the edge to keep if it was stored under an Idempotency-Key.
    answer: Answer | None = None


def json_response(status: int, content: Any, headers: dict[str, str] | None = None) -> Response:
    """A response with an orjson-encoded body."""
    return Response(status, orjson.dumps(content), encode_headers(headers))


def answer_response(answer: Answer, *, replayed: bool = False) -> Response:
    """A write's answer; a replayed one (an Idempotency-Key's stored answer) says so."""
    headers: list[tuple[bytes, bytes]] = []
    if answer.location is not None:
        headers.append((b"location", answer.location.encode("latin-1")))
    if answer.etag is not None:
        headers.append((b"etag", answer.etag.encode("latin-1")))
    if replayed:
        headers.append((b"idempotent-replayed", b"true"))
    return Response(answer.status, answer.body, headers, answer=answer)


def not_modified(etag: str) -> Response:
    """304: no body, the current `ETag` (the edge sends no Content-Type or -Length)."""
    return Response(304, b"", [(b"etag", etag.encode("latin-1"))])


def encode_headers(headers: dict[str, str] | None) -> list[tuple[bytes, bytes]]:
    """Header names and values as ASGI wants them."""
    return [(k.lower().encode(), v.encode("latin-1")) for k, v in (headers or {}).items()]


def common_headers(rid: str) -> list[tuple[bytes, bytes]]:
    """What every answer carries, errors included: its request id, and no caching."""
    return [(b"x-request-id", rid.encode()), (b"cache-control", b"no-store")]


def new_request_id() -> str:
    """A request id issued here."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):x}"


def header(scope: Scope, name: bytes) -> str | None:
    """One request header, decoded as Latin-1 (as HTTP defines), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class Repeated:
    """A header given more than once where it must be given once: ambiguous, so refused."""


REPEATED = Repeated()


def sole_header(scope: Scope, name: bytes) -> str | Repeated | None:
    """A header that must appear at most once: its value, None, or `REPEATED`.

    Two `Authorization` or `Content-Type` headers are ambiguous (a proxy may act on one and
    this service on the other), so the edge refuses them instead of picking either.
    """
    found: str | Repeated | None = None
    for key, value in scope["headers"]:
        if key == name:
            if found is not None:
                return REPEATED
            found = str(value.decode("latin-1"))
    return found


def headers_joined(scope: Scope, name: bytes) -> str | None:
    """A list header's lines joined into one list (RFC 9110 5.3), or None if absent."""
    found = [value.decode("latin-1") for key, value in scope["headers"] if key == name]
    return ", ".join(found) if found else None


ANY_TAG = "*"
# One member of an entity-tag list: optional W/, a quoted opaque tag, then a comma or the end.
_ENTITY_TAG = re.compile(r'[ \t]*(W/)?("[\x21\x23-\x7e\x80-\xff]*")[ \t]*(?:,|$)')


def entity_tags(value: str | None) -> str | list[tuple[bool, str]] | None:
    """An If-Match or If-None-Match value: None (absent), `ANY_TAG`, or its tags as
    (weak, opaque tag with its quotes). A malformed member is dropped: it matches nothing."""
    if value is None:
        return None
    if value.strip(" \t") == ANY_TAG:
        return ANY_TAG
    tags: list[tuple[bool, str]] = []
    at = 0
    while at < len(value):
        found = _ENTITY_TAG.match(value, at)
        if found is None:
            comma = value.find(",", at)
            if comma < 0:
                break
            at = comma + 1
            continue
        tags.append((found.group(1) is not None, found.group(2)))
        at = found.end()
    return tags


def request_id(scope: Scope) -> str:
    """The client's X-Request-Id if it is sane, else a new one."""
    given = header(scope, b"x-request-id")
    if given is not None and _SANE_REQUEST_ID.fullmatch(given):
        return given
    return new_request_id()


class _Huge:
    """An integer too long to be one: refused by every schema type."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.digits = len(text)

    def __repr__(self) -> str:
        return self.text


def _parse_int(text: str) -> int | _Huge:
    return int(text) if len(text) <= _MAX_INT_DIGITS else _Huge(text)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a key is repeated")
    return out


_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_keys, parse_int=_parse_int, parse_constant=_no_constant
)


async def read_json_object(scope: Scope, receive: Receive) -> dict[str, Any]:
    """The body as a JSON object, after the content type and size checks."""
    check_media_type(scope)
    length = header(scope, b"content-length")
    if length is not None and length.strip().isdigit() and int(length) > MAX_BODY:
        raise PayloadTooLarge()
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise MalformedJson("The request body ended early")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise PayloadTooLarge()
        chunks.append(chunk)
        more = message.get("more_body", False)
    return parse_json_object(b"".join(chunks))


def check_media_type(scope: Scope) -> None:
    """`UnsupportedMediaType` unless the body is JSON in UTF-8, sent as is.

    Only `application/json` is read, with no `charset` parameter or `charset=utf-8` (any other
    charset would be parsed as UTF-8 and mean something else), and no content coding: a body
    in `gzip` or `br` is not decoded here, so it is refused rather than misread.
    """
    content_type = sole_header(scope, b"content-type")
    if not isinstance(content_type, str):
        raise UnsupportedMediaType()
    media, *parameters = content_type.split(";")
    if media.strip().lower() != "application/json":
        raise UnsupportedMediaType()
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            raise UnsupportedMediaType("The request body must be JSON in UTF-8")
    for key, value in scope["headers"]:
        if key == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
            raise UnsupportedMediaType("Content-Encoding is not supported; send the body as is")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Strict JSON (UTF-8, no repeated keys, no NaN), and an object."""
    try:
        text = raw.decode("utf-8")
        value = _DECODER.decode(text)
    except UnicodeDecodeError:
        raise MalformedJson("The request body is not valid UTF-8") from None
    except RecursionError:
        raise MalformedJson("The request body is nested too deeply") from None
    except ValueError as exc:
        raise MalformedJson(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise MalformedJson("The request body must be a JSON object")
    return value


def parse_body(model: type[ModelT], body: dict[str, Any]) -> ModelT:
    """The body as the operation's input model, or `VALIDATION_ERROR` per problem.

    Every unknown key is a problem of its own, so a body of many unknown keys is cut to the
    first `MAX_PROBLEMS` of them before validation: the answer is the same (it lists at most
    that many) and the work no longer grows with the number of keys.
    """
    unlisted = 0
    fields = model.model_fields
    unknown = [key for key in body if key not in fields]
    if len(unknown) > MAX_PROBLEMS:
        unlisted = len(unknown) - MAX_PROBLEMS
        dropped = set(unknown[MAX_PROBLEMS:])
        body = {key: value for key, value in body.items() if key not in dropped}
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise problems(exc, unlisted) from None


def problems(exc: ValidationError, unlisted: int = 0) -> ValidationFailed:
    """One VALIDATION_ERROR entry per problem, with the dotted field path: at most
    `MAX_PROBLEMS`, then one entry (without `field`) that says how many more there are."""
    found: list[tuple[str | None, str]] = []
    for error in exc.errors(include_url=False, include_input=False):
        path = ".".join(str(p) for p in error["loc"])
        if error["type"] == "extra_forbidden":
            message = "Unknown field"
        elif error["type"] == "missing":
            message = "Field required"
        else:
            message = error["msg"].removeprefix("Value error, ")
        found.append((path, message))
    more = len(found) - MAX_PROBLEMS + unlisted
    if more > 0:
        found = found[:MAX_PROBLEMS]
        found.append((None, f"{more} more problems are not listed"))
    return ValidationFailed(found)
