"""The errors a client can see, each one code and one status.

    ApiError
     ├── InternalError          500 INTERNAL_ERROR (a defect of ours: never for client input)
     ├── Unauthorised           401 UNAUTHORISED
     ├── Forbidden              403 FORBIDDEN
     ├── NotFound               404 NOT_FOUND
     ├── MethodNotAllowed       405 METHOD_NOT_ALLOWED
     ├── PayloadTooLarge        413 PAYLOAD_TOO_LARGE
     ├── UnsupportedMediaType   415 UNSUPPORTED_MEDIA_TYPE
     ├── MalformedJson          400 MALFORMED_JSON
     ├── MalformedRequest       400 MALFORMED_REQUEST (not valid HTTP: refused by the parser)
     ├── RequestHeaderFieldsTooLarge
     │                          431 REQUEST_HEADER_FIELDS_TOO_LARGE (a head over 16 KiB)
     ├── InvalidIdempotencyKey  400 INVALID_IDEMPOTENCY_KEY
     ├── IdempotencyKeyInUse    409 IDEMPOTENCY_KEY_IN_USE (its first request still runs after 5 s)
     ├── PreconditionFailed     412 PRECONDITION_FAILED (If-Match matches nothing)
     ├── IdempotencyKeyReused   422 IDEMPOTENCY_KEY_REUSED (stored for another request)
     ├── RateLimited            429 RATE_LIMITED (the owner's quota for the operation is spent,
     │                              or the client address failed authentication too often)
     ├── ValidationFailed       422 VALIDATION_ERROR (one entry per problem)
     ├── BusinessRuleViolation  422 DUPLICATE_MERCHANT_IDS | INVALID_MERCHANT_IDS |
     │                              INVALID_INTEGRATION_TYPE | MISSING_UPDATE_FIELDS
     └── ServiceUnavailable     503 SERVICE_UNAVAILABLE (database down or read-only, pool, statement
          │                         or SQLite write-lock timeout; a connection past the cap)
          ├── Overloaded            503, the same answer: the worker already runs
          │                         CBSTOP_MAX_IN_FLIGHT API requests
          └── LockWaitExpired       503, the same answer: a write waited too long for a lock (an
                                    Idempotency-Key's request turns it into 409)

Services raise them; `cbstop.web.errors.render` turns each into the `{"errors": [...]}`
envelope, the only place that does. Each class also carries what the OpenAPI document says
of it (`description`, and the `documented_headers` its answers always carry), so the
document's error responses are built from the same classes the code raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class ErrorEntry:
    """One entry of the envelope."""

    code: str
    message: str
    field: str | None = None

    def as_dict(self) -> dict[str, str]:
        """The entry as it is sent."""
        out = {"code": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


class ApiError(Exception):
    """An error with its envelope entries and HTTP status."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "INTERNAL_ERROR"
    message: ClassVar[str] = "Internal error"
    # What the OpenAPI document says of this error, and the headers its answer always has.
    description: ClassVar[str] = "An error in the service itself."
    documented_headers: ClassVar[dict[str, str]] = {}
    # The `field` the document's example of this error shows, if its entries carry one.
    example_field: ClassVar[str | None] = None

    def __init__(
        self,
        message: str | None = None,
        *,
        entries: list[ErrorEntry] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.entries = entries or [ErrorEntry(self.code, message or self.message)]
        self.headers = headers or {}
        super().__init__(self.entries[0].message)

    @classmethod
    def example(cls) -> ApiError:
        """An instance as the OpenAPI document shows it (whatever the class's arguments)."""
        exc = cls.__new__(cls)
        ApiError.__init__(exc, entries=[ErrorEntry(cls.code, cls.message, cls.example_field)])
        return exc


class InternalError(ApiError):
    """A defect in the service: logged with its traceback, answered without one."""


class Unauthorised(ApiError):
    status, code, message = 401, "UNAUTHORISED", "Unauthorised"
    description = (
        "Missing, malformed, unknown or revoked API key, or more than one `Authorization`."
    )
    documented_headers = {"WWW-Authenticate": "Always `Bearer`."}

    def __init__(self) -> None:
        super().__init__(headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    status, code, message = 403, "FORBIDDEN", "Forbidden"
    description = "The key lacks the ability this operation needs."


class NotFound(ApiError):
    status, code, message = 404, "NOT_FOUND", "Not found"
    description = "Not found, or outside the key's access scope (the two are indistinguishable)."


class MethodNotAllowed(ApiError):
    status, code, message = 405, "METHOD_NOT_ALLOWED", "Method not allowed"
    description = "The path does not accept this method; `Allow` lists the ones it does."
    documented_headers = {"Allow": "The methods the path accepts."}

    def __init__(self, allow: list[str]) -> None:
        super().__init__(headers={"Allow": ", ".join(allow)})


class MalformedJson(ApiError):
    status, code, message = 400, "MALFORMED_JSON", "The request body is not a valid JSON object"
    description = "The body is not valid JSON, or not a JSON object."


class MalformedRequest(ApiError):
    status, code, message = 400, "MALFORMED_REQUEST", "The request is not valid HTTP"
    description = "The request is not valid HTTP (refused by the server's parser)."


class PayloadTooLarge(ApiError):
    status, code, message = 413, "PAYLOAD_TOO_LARGE", "The request body is larger than 1 MiB"
    description = "The body is larger than 1 MiB."


class UnsupportedMediaType(ApiError):
    status, code, message = (
        415,
        "UNSUPPORTED_MEDIA_TYPE",
        "The request body must be application/json",
    )
    description = (
        "The body is not `application/json` in UTF-8 sent as is: another media type, a "
        "`charset` other than UTF-8, a `Content-Encoding` other than `identity`, or a "
        "repeated `Content-Type`."
    )


class ValidationFailed(ApiError):
    status, code, message = 422, "VALIDATION_ERROR", "The request is invalid"
    description = "The request does not fit the schema: one entry per problem, with `field`."
    example_field = "name"

    def __init__(self, problems: list[tuple[str | None, str]]) -> None:
        super().__init__(entries=[ErrorEntry(self.code, m, f) for f, m in problems])


class BusinessRuleViolation(ApiError):
    """A rule beyond the schema; each subclass is one code, with its own message."""

    status = 422


class DuplicateMerchantIds(BusinessRuleViolation):
    code = "DUPLICATE_MERCHANT_IDS"
    message = "merchant_ids contains duplicate values"
    description = "`merchant_ids` contains duplicate values."


class InvalidMerchantIds(BusinessRuleViolation):
    code = "INVALID_MERCHANT_IDS"
    message = "One or more merchant_ids are invalid or inaccessible for this organisation"
    description = (
        "A merchant does not exist, is inaccessible, or does not belong to the organisation."
    )


class InvalidIntegrationType(BusinessRuleViolation):
    code = "INVALID_INTEGRATION_TYPE"
    message = "Only CUSTOM_ORDERS integrations can be updated"
    description = "PATCH of an integration whose type is not `CUSTOM_ORDERS`."


class MissingUpdateFields(BusinessRuleViolation):
    code = "MISSING_UPDATE_FIELDS"
    message = "Provide at least one of status or name"
    description = "PATCH without `status` or `name`."


class ServiceUnavailable(ApiError):
    status, code, message = (
        503,
        "SERVICE_UNAVAILABLE",
        "The service is temporarily unavailable; retry shortly",
    )
    description = "The database is unavailable or busy; retry after `Retry-After` seconds."
    documented_headers = {"Retry-After": "Seconds to wait before retrying."}

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "1"})


class Overloaded(ServiceUnavailable):
    """Refused at once because the worker already runs `max_in_flight` API requests: a quick
    503 that a client retries, rather than a queue in which every request waits longer."""

    message = "The service is at capacity; retry after Retry-After seconds"
    description = (
        "The worker is at capacity (it already runs `CBSTOP_MAX_IN_FLIGHT` API requests): "
        "refused at once, before the key is looked up; nothing was done."
    )


class RequestHeaderFieldsTooLarge(ApiError):
    status, code, message = (
        431,
        "REQUEST_HEADER_FIELDS_TOO_LARGE",
        "The request line and headers are larger than 16 KiB",
    )
    description = "The request target and header fields together are larger than 16 KiB."


class LockWaitExpired(ServiceUnavailable):
    """A write gave up waiting for a lock: a row or key another transaction holds
    (PostgreSQL's `lock_timeout`), or SQLite's write lock. The same 503 as its parent; a
    request with an Idempotency-Key retries until its own deadline and then answers 409."""


IDEMPOTENCY_KEY = "Idempotency-Key"


class InvalidIdempotencyKey(ApiError):
    status, code = 400, "INVALID_IDEMPOTENCY_KEY"
    message = (
        "Idempotency-Key must be 1-255 printable ASCII characters (0x21-0x7E), bare or quoted, "
        "given once"
    )
    description = (
        "`Idempotency-Key` is empty, longer than 255 characters, holds a character outside "
        "0x21-0x7E, is a broken quoted string, or is given more than once."
    )
    example_field = IDEMPOTENCY_KEY

    def __init__(self) -> None:
        super().__init__(entries=[ErrorEntry(self.code, self.message, IDEMPOTENCY_KEY)])


class IdempotencyKeyReused(ApiError):
    status, code = 422, "IDEMPOTENCY_KEY_REUSED"
    message = (
        "This Idempotency-Key was already used for a different request (another method, path "
        "or body); use a new key for a new request"
    )
    description = (
        "The `Idempotency-Key` is stored for a successful request with another method, path or "
        "body."
    )
    example_field = IDEMPOTENCY_KEY

    def __init__(self) -> None:
        super().__init__(entries=[ErrorEntry(self.code, self.message, IDEMPOTENCY_KEY)])


class IdempotencyKeyInUse(ApiError):
    status, code = 409, "IDEMPOTENCY_KEY_IN_USE"
    message = (
        "A request with this Idempotency-Key is still in progress; retry after Retry-After seconds"
    )
    description = (
        "An earlier request with this `Idempotency-Key` was still in progress after 5 s; "
        "retry after `Retry-After` seconds to get its answer."
    )
    documented_headers = {"Retry-After": "Seconds to wait before retrying."}
    example_field = IDEMPOTENCY_KEY

    def __init__(self) -> None:
        super().__init__(
            entries=[ErrorEntry(self.code, self.message, IDEMPOTENCY_KEY)],
            headers={"Retry-After": "1"},
        )


class RateLimited(ApiError):
    status, code = 429, "RATE_LIMITED"
    message = "Too many requests for this operation; retry after Retry-After seconds"
    description = (
        "The key owner's quota for this operation is spent (`RateLimit-Policy` `default`), or "
        "the client address failed authentication too often (`auth-failures`); nothing was "
        "done. Retry after `Retry-After` seconds."
    )
    documented_headers = {
        "Retry-After": "Whole seconds until a retry can succeed (rounded up, at least 1).",
        "RateLimit-Policy": 'The policy that refused: `"default";q=<requests>;w=<seconds>`, the '
        'quota per key owner and operation (`"default";q=100;w=60` unless the server sets '
        '`CBSTOP_RATE_LIMIT`), or `"auth-failures";q=<failures>;w=<seconds>`, the budget of '
        'failed authentications per client address (`"auth-failures";q=20;w=60` unless the '
        "server sets `CBSTOP_AUTH_FAILURE_LIMIT`).",
        "RateLimit": 'What is left of it: `"<policy>";r=0;t=<seconds until r is back to q>`.',
    }
    AUTH_FAILURES = (
        "Too many failed authentications from this address; retry after Retry-After seconds"
    )

    def __init__(self, message: str | None, headers: dict[str, str]) -> None:
        super().__init__(message, headers=headers)


class PreconditionFailed(ApiError):
    status, code = 412, "PRECONDITION_FAILED"
    message = "If-Match does not match the integration's current ETag; nothing was changed"
    description = (
        "`If-Match` matches no current entity tag (weak and malformed tags never match); "
        "`ETag` gives the current one."
    )
    documented_headers = {"ETag": "The integration's current entity tag."}

    def __init__(self, etag: str) -> None:
        super().__init__(headers={"ETag": etag})
