"""The errors a client can see, each one code and one status.

    ApiError
     ├── Unauthorised           401 UNAUTHORISED
     ├── Forbidden              403 FORBIDDEN
     ├── NotFound               404 NOT_FOUND
     ├── MethodNotAllowed       405 METHOD_NOT_ALLOWED
     ├── PayloadTooLarge        413 PAYLOAD_TOO_LARGE
     ├── UnsupportedMediaType   415 UNSUPPORTED_MEDIA_TYPE
     ├── MalformedJson          400 MALFORMED_JSON
     ├── MalformedRequest       400 MALFORMED_REQUEST (not valid HTTP: refused by the parser)
     ├── ValidationFailed       422 VALIDATION_ERROR (one entry per problem)
     ├── BusinessRuleViolation  422 DUPLICATE_MERCHANT_IDS | INVALID_MERCHANT_IDS |
     │                              INVALID_INTEGRATION_TYPE | MISSING_UPDATE_FIELDS
     └── ServiceUnavailable     503 SERVICE_UNAVAILABLE (database down, pool or statement timeout)

Services raise them; `cbstop.web.errors` turns each into the `{"errors": [...]}` envelope.
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

    def body(self) -> dict[str, list[dict[str, str]]]:
        """The envelope."""
        return {"errors": [e.as_dict() for e in self.entries]}


class Unauthorised(ApiError):
    status, code, message = 401, "UNAUTHORISED", "Unauthorised"

    def __init__(self) -> None:
        super().__init__(headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    status, code, message = 403, "FORBIDDEN", "Forbidden"


class NotFound(ApiError):
    status, code, message = 404, "NOT_FOUND", "Not found"


class MethodNotAllowed(ApiError):
    status, code, message = 405, "METHOD_NOT_ALLOWED", "Method not allowed"

    def __init__(self, allow: list[str]) -> None:
        super().__init__(headers={"Allow": ", ".join(allow)})


class MalformedJson(ApiError):
    status, code, message = 400, "MALFORMED_JSON", "The request body is not a valid JSON object"


class MalformedRequest(ApiError):
    status, code, message = 400, "MALFORMED_REQUEST", "The request is not valid HTTP"


class PayloadTooLarge(ApiError):
    status, code, message = 413, "PAYLOAD_TOO_LARGE", "The request body is larger than 1 MiB"


class UnsupportedMediaType(ApiError):
    status, code, message = (
        415,
        "UNSUPPORTED_MEDIA_TYPE",
        "The request body must be application/json",
    )


class ValidationFailed(ApiError):
    status, code, message = 422, "VALIDATION_ERROR", "The request is invalid"

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__(entries=[ErrorEntry(self.code, m, f) for f, m in problems])


class BusinessRuleViolation(ApiError):
    status = 422

    def __init__(self, code: str, message: str) -> None:
        super().__init__(entries=[ErrorEntry(code, message)])


class DuplicateMerchantIds(BusinessRuleViolation):
    code = "DUPLICATE_MERCHANT_IDS"

    def __init__(self) -> None:
        super().__init__(self.code, "merchant_ids contains duplicate values")


class InvalidMerchantIds(BusinessRuleViolation):
    code = "INVALID_MERCHANT_IDS"

    def __init__(self) -> None:
        super().__init__(
            self.code,
            "One or more merchant_ids are invalid or inaccessible for this organisation",
        )


class InvalidIntegrationType(BusinessRuleViolation):
    code = "INVALID_INTEGRATION_TYPE"

    def __init__(self) -> None:
        super().__init__(self.code, "Only CUSTOM_ORDERS integrations can be updated")


class MissingUpdateFields(BusinessRuleViolation):
    code = "MISSING_UPDATE_FIELDS"

    def __init__(self) -> None:
        super().__init__(self.code, "Provide at least one of status or name")


class ServiceUnavailable(ApiError):
    status, code, message = (
        503,
        "SERVICE_UNAVAILABLE",
        "The service is temporarily unavailable; retry shortly",
    )

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "1"})
