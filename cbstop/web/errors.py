"""The one renderer of an error: an `ApiError` of any status into the envelope.

Every error answer goes through `render`: API operations, the service endpoints, unknown
paths and wrong methods (the edge), defects (500), and — as raw bytes, through
`render_raw` — requests the HTTP parser refuses before any application code runs.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson

from cbstop.errors import ApiError
from cbstop.web.http import JSON, Response, common_headers, encode_headers


def envelope(exc: ApiError) -> dict[str, Any]:
    """`{"errors": [{"code", "message", "field"?}, ...]}`."""
    return {"errors": [entry.as_dict() for entry in exc.entries]}


def render(exc: ApiError) -> Response:
    """The answer to an error: its status, the envelope, and the headers it carries."""
    return Response(exc.status, orjson.dumps(envelope(exc)), encode_headers(exc.headers))


def render_raw(exc: ApiError, request_id: str) -> bytes:
    """The whole HTTP/1.1 answer to an error, closing the connection (for the parser)."""
    response = render(exc)
    lines = [
        f"HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}".encode("ascii"),
        b"content-type: " + JSON,
        b"content-length: " + str(len(response.body)).encode("ascii"),
        *(name + b": " + value for name, value in common_headers(request_id)),
        *(name + b": " + value for name, value in response.headers),
        b"connection: close",
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + response.body
