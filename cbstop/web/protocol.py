"""uvicorn's HTTP protocols, answering a request that is not valid HTTP with the envelope.

uvicorn answers a request its parser refuses (a control character in a header, a broken
request line) with a plain-text 400 before the app sees it; the contract wants the envelope
on every error, so these classes write it instead. `send_400_response` is a private name
of uvicorn's: pyproject.toml bounds uvicorn's version, and
`tests/reliability/test_hostile_input.py` fails if a real `cbstop serve` stops answering
such a request with the envelope.
"""

from __future__ import annotations

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cbstop.errors import MalformedRequest
from cbstop.web.errors import render_raw
from cbstop.web.http import new_request_id


class EnvelopeHttpToolsProtocol(HttpToolsProtocol):
    """httptools (production), with the envelope on unparsable requests."""

    def send_400_response(self, msg: str) -> None:
        self.transport.write(render_raw(MalformedRequest(), new_request_id()))
        self.transport.close()


class EnvelopeH11Protocol(H11Protocol):
    """h11 (the pure-Python parser), with the envelope on unparsable requests."""

    def send_400_response(self, msg: str) -> None:
        self.transport.write(render_raw(MalformedRequest(), new_request_id()))
        self.transport.close()
