"""The route table: each operation declared once; dispatch, OpenAPI and metrics all read it.

An `Operation` says, for one method on one path template: the handler; the ability a key
needs (None: no key at all, as for the service endpoints); the query parameters and the
body model it takes; the errors its handler can raise; what it answers on success; and its
documentation (summary, description, examples, tags). From that alone the edge runs the
checks in the contract's order (key, ability, query, body), the OpenAPI document lists
every status the operation can answer with the codes of its error classes, and the access
log and metrics label the request with the path template.

`RouteTable` matches a path to its template, with or without one trailing slash; HEAD is
answered by GET's operation; a known path with another method is 405 with `Allow`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from pydantic import BaseModel

from cbstop import errors
from cbstop.auth.service import Principal
from cbstop.errors import ApiError, ValidationFailed
from cbstop.idempotency.keys import Keyed
from cbstop.web.http import Receive, Response, Scope

if TYPE_CHECKING:
    from cbstop.db.database import Database
    from cbstop.web.state import AppState

_PARAMETER = re.compile(r"\{([a-z_]+)\}")


@dataclass(slots=True)
class Call:
    """One request, as a handler sees it: already authenticated and parsed."""

    state: AppState
    scope: Scope
    receive: Receive
    request_id: str
    params: dict[str, str]
    principal_: Principal | None = None
    query: dict[str, Any] = field(default_factory=dict)
    body: Any = None
    # The request's Idempotency-Key, owner and fingerprint, if it sent a key.
    keyed: Keyed | None = None
    # The rate limit's RateLimit-Policy and RateLimit fields for the answer (CONTRACT 3.3).
    rate_fields: list[tuple[bytes, bytes]] | None = None

    @property
    def principal(self) -> Principal:
        """The caller's key (operations that declare an ability always have one)."""
        if self.principal_ is None:
            raise errors.InternalError("an operation without an ability asked for the key")
        return self.principal_

    @property
    def db(self) -> Database:
        return self.state.db


Handler = Callable[[Call], Awaitable[Response]]


@dataclass(frozen=True)
class IntParam:
    """An integer query parameter in [minimum, maximum], given at most once."""

    name: str
    description: str
    default: int
    minimum: int
    maximum: int | None = None

    def parse(self, given: list[str]) -> int | str:
        """The value, or the problem with it (for `VALIDATION_ERROR`)."""
        if len(given) > 1:
            return "Give the parameter once"
        text = given[0]
        # The length bound only keeps int() cheap; the declared bounds decide.
        ok = text.isascii() and text.isdigit() and len(text) <= 40
        if ok and int(text) >= self.minimum and (self.maximum is None or int(text) <= self.maximum):
            return int(text)
        if self.maximum is None:
            return f"Must be an integer of at least {self.minimum}"
        return f"Must be an integer from {self.minimum} to {self.maximum}"

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "integer", "minimum": self.minimum}
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return {**out, "default": self.default}


@dataclass(frozen=True)
class StrParam:
    """A string query parameter, given at most once: absent is None; given, it is 1 to
    `max_length` code points without NUL (neither database can store one) and, if `allowed`
    is set, one of those values."""

    name: str
    description: str
    max_length: int
    allowed: tuple[str, ...] = ()
    default: None = None

    def parse(self, given: list[str]) -> str:
        """The value; a problem with it raises `ValueError` with the message for the 422."""
        if len(given) > 1:
            raise ValueError("Give the parameter once")
        text = given[0]
        if self.allowed:
            if text not in self.allowed:
                raise ValueError("Must be one of: " + ", ".join(self.allowed))
        elif not 1 <= len(text) <= self.max_length or "\x00" in text:
            raise ValueError(f"Must be 1-{self.max_length} characters, without NUL")
        return text

    def schema(self) -> dict[str, Any]:
        if self.allowed:
            return {"type": "string", "enum": list(self.allowed)}
        return {"type": "string", "minLength": 1, "maxLength": self.max_length}


QueryParam = IntParam | StrParam


def parse_query(declared: Sequence[QueryParam], query_string: bytes) -> dict[str, Any]:
    """The declared parameters, each valid and given at most once; nothing undeclared."""
    seen: dict[str, list[str]] = {}
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        seen.setdefault(name, []).append(value)
    by_name = {param.name: param for param in declared}
    values: dict[str, Any] = {param.name: param.default for param in declared}
    found: list[tuple[str | None, str]] = []
    for name, given in seen.items():
        param = by_name.get(name)
        if param is None:
            # The operation's declared parameters are all it takes: a client that sends a
            # filter it does not have must learn that, not get an unfiltered answer.
            allowed = ", ".join(p.name for p in declared)
            found.append((name, f"Unknown query parameter; the parameters are: {allowed}"))
            continue
        if isinstance(param, IntParam):
            parsed = param.parse(given)
            if isinstance(parsed, str):
                found.append((name, parsed))
            else:
                values[name] = parsed
            continue
        try:
            values[name] = param.parse(given)
        except ValueError as problem:
            found.append((name, str(problem)))
    if found:
        raise ValidationFailed(found)
    return values


@dataclass(frozen=True)
class HeaderParam:
    """A request header an operation reads, for the OpenAPI document."""

    name: str
    description: str


IDEMPOTENCY_KEY = HeaderParam(
    "Idempotency-Key",
    "1-255 printable ASCII characters, bare or quoted. A retry with the same key and the same "
    "request gets the first success's answer again (`Idempotent-Replayed: true`) and writes "
    "nothing; kept 24 hours, per key owner.",
)


@dataclass(frozen=True)
class Example:
    """A named example for the OpenAPI document."""

    summary: str
    value: Any


@dataclass(frozen=True)
class Success:
    """What an operation answers when it succeeds."""

    status: int
    description: str
    model: type[BaseModel] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Headers sent on some successes only (a list's `Link` when more follow).
    optional_headers: dict[str, str] = field(default_factory=dict)
    examples: dict[str, Example] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    """One method on one path template, declared once."""

    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    success: Success
    description: str = ""
    ability: str | None = None
    query: tuple[QueryParam, ...] = ()
    # Takes an Idempotency-Key (CONTRACT 3.1): the edge parses it and fingerprints the request.
    idempotent: bool = False
    # Other request headers the handler reads (documented only).
    headers: tuple[HeaderParam, ...] = ()
    body: type[BaseModel] | None = None
    body_examples: dict[str, Example] = field(default_factory=dict)
    # The errors the handler itself can raise; those of the checks before it are implied.
    errors: tuple[type[ApiError], ...] = ()
    # If the handler can answer 304 Not Modified: what the document says of it.
    not_modified: str | None = None
    path_params: dict[str, str] = field(default_factory=dict)
    # An example value of a path, query or header parameter, by the parameter's name.
    parameter_examples: dict[str, Example] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    # Service endpoints (health, metrics, the document itself) stay out of the document.
    documented: bool = True

    @cached_property
    def limit_key(self) -> str:
        """What the quota counts per owner: the operation, as method and path template."""
        return f"{self.method} {self.path}"

    @property
    def request_headers(self) -> tuple[HeaderParam, ...]:
        """The request headers the document declares."""
        return ((IDEMPOTENCY_KEY,) if self.idempotent else ()) + self.headers

    def raises(self) -> tuple[type[ApiError], ...]:
        """Every error this operation can answer with, in the order the checks run."""
        # The HTTP parser's refusals (cbstop/web/protocol.py), first.
        found: list[type[ApiError]] = [errors.MalformedRequest, errors.RequestHeaderFieldsTooLarge]
        if self.ability is not None:
            # Shed at capacity (503), then the key and its rate limits, then the ability.
            found += [errors.Overloaded, errors.Unauthorised, errors.RateLimited, errors.Forbidden]
        if self.idempotent:
            found.append(errors.InvalidIdempotencyKey)
        if self.body is not None:
            found += [errors.UnsupportedMediaType, errors.PayloadTooLarge, errors.MalformedJson]
        if self.idempotent:
            found += [errors.IdempotencyKeyReused, errors.IdempotencyKeyInUse]
        if self.body is not None or self.query:
            found.append(errors.ValidationFailed)
        found += self.errors
        if self.ability is not None:
            found.append(errors.ServiceUnavailable)  # the key is looked up in the database
        return tuple(dict.fromkeys(found))


@dataclass(frozen=True)
class PathItem:
    """A path template and its operations by method."""

    template: str
    operations: dict[str, Operation]

    @property
    def allow(self) -> list[str]:
        """The methods the path accepts, HEAD beside GET."""
        allowed = list(self.operations)
        if "GET" in allowed:
            allowed.insert(allowed.index("GET") + 1, "HEAD")
        return allowed


def _pattern(template: str) -> re.Pattern[str]:
    """`/v1/things/{thing_id}` as a regex: each parameter one non-empty path segment."""
    parts = _PARAMETER.split(template)  # literal, name, literal, name, ...
    return re.compile(
        "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts))
    )


class RouteTable:
    """Every operation of the service, matched by path template."""

    def __init__(self, operations: Sequence[Operation]) -> None:
        self.operations = tuple(operations)
        items: dict[str, PathItem] = {}
        for op in self.operations:
            item = items.setdefault(op.path, PathItem(op.path, {}))
            if op.method in item.operations:
                raise ValueError(f"{op.method} {op.path} is declared twice")
            item.operations[op.method] = op
        self.paths = tuple(items.values())
        self._static = {t: item for t, item in items.items() if "{" not in t}
        self._dynamic = [(_pattern(t), item) for t, item in items.items() if "{" in t]

    def match(self, path: str) -> tuple[PathItem, dict[str, str]] | None:
        """The path item a request path names (one trailing slash ignored), and its values."""
        if len(path) > 1 and path[-1] == "/":
            path = path[:-1]
        item = self._static.get(path)
        if item is not None:
            return item, {}
        for pattern, candidate in self._dynamic:
            found = pattern.fullmatch(path)
            if found is not None:
                return candidate, found.groupdict()
        return None
