"""uvicorn's HTTP protocols, answering a request that is not valid HTTP with the envelope.

uvicorn answers a request its parser refuses (a control character in a header, a broken
request line) with a plain-text 400 before the app sees it; the contract wants the envelope
on every error, so these classes write it instead.
"""

from __future__ import annotations

import uuid

import orjson
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cbstop.errors import MalformedRequest


def malformed_request_response() -> bytes:
    """The raw HTTP/1.1 answer to a request that could not be parsed."""
    body = orjson.dumps(MalformedRequest().body())
    head = (
        "HTTP/1.1 400 Bad Request\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        f"x-request-id: {uuid.uuid4().hex}\r\n"
        "cache-control: no-store\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class EnvelopeHttpToolsProtocol(HttpToolsProtocol):
    """httptools (production), with the envelope on unparsable requests."""

    def send_400_response(self, msg: str) -> None:
        self.transport.write(malformed_request_response())
        self.transport.close()


class EnvelopeH11Protocol(H11Protocol):
    """h11 (the pure-Python parser), with the envelope on unparsable requests."""

    def send_400_response(self, msg: str) -> None:
        self.transport.write(malformed_request_response())
        self.transport.close()
