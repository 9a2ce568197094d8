"""uvicorn's HTTP protocols: the envelope on every refusal, and no client can exhaust a worker.

uvicorn answers a request its parser refuses (a control character in a header, a broken
request line) with a plain-text 400 before the app sees it; the contract wants the envelope
on every error, so these classes write it instead.

On top of that, the httptools protocol (production's) bounds what one connection may hold:

- the request head (target and header fields) to `MAX_HEAD_BYTES`, else 431. httptools has
  no limit of its own: a 200 MiB header was read whole (a worker went from 72 to 482 MB
  peak and spent 50 s of CPU joining its pieces). A head still incomplete is counted as
  bytes arrive, so a worker holds at most the limit plus one read (uvloop reads 256 KiB);
  a complete one is counted exactly, as target plus each header's name and value plus 4.
- the time to send a request head (`Limits.header_timeout`, from the connection's opening
  or the request's first byte) and the time a body may go without progress
  (`Limits.body_timeout`): past either the connection is closed, without an answer.
  uvicorn only times out a connection idle *after* a response (its keep-alive timeout): a
  connection that sent nothing, or half a head, or half a body, stayed open for ever.
- the connections a worker serves (`Limits.max_connections`): a request arriving on a
  connection past the cap is answered 503 SERVICE_UNAVAILABLE (Retry-After: 1) and the
  connection closed, so a load balancer retries elsewhere. (uvicorn's `limit_concurrency`
  does the same in plain text.)
- an HTTP/1.1 request without exactly one `Host`, or any request with two, is 400
  MALFORMED_REQUEST (RFC 9112 §3.2: a server MUST answer 400).
- a request asking to upgrade the connection (WebSocket, h2c) is served as plain HTTP
  (`cbstop serve` runs uvicorn with `ws="none"`) and its connection closed after the
  answer: the parser stops at an upgrade, so whatever followed on it would go unread.

uvicorn's private names used here (pyproject.toml bounds uvicorn's version; each is
checked by tests/test_hooks.py, and the behaviour by tests/reliability/test_connections.py
and tests/reliability/test_hostile_input.py): `send_400_response` (its parser's refusal),
`_unsupported_upgrade_warning` (two misleading warnings per upgrade request, silenced),
and the protocol's attributes `connections`, `flow`, `cycle`, `parser`, `url`, `headers`,
`loop` and its callbacks `on_message_begin`, `on_headers_complete`, `on_body`,
`on_message_complete`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from cbstop.errors import (
    ApiError,
    MalformedRequest,
    RequestHeaderFieldsTooLarge,
    ServiceUnavailable,
)
from cbstop.web.errors import render_raw
from cbstop.web.http import new_request_id

# The request target and header fields together; nginx's default is 8 KiB per header line
# (4 of them), and our own requests use well under 1 KiB.
MAX_HEAD_BYTES = 16 * 1024

# What the connection is waiting for from the client.
_IDLE, _HEAD, _BODY = 0, 1, 2


@dataclass(frozen=True)
class Limits:
    """What one connection may take of a worker (from `Settings`)."""

    header_timeout: float = 10.0
    body_timeout: float = 10.0
    max_connections: int = 1000


DEFAULT_LIMITS = Limits()


class EnvelopeHttpToolsProtocol(HttpToolsProtocol):
    """httptools (production), with the envelope on refusals and bounded connections."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self._state = _HEAD  # a new connection owes us a request head
        self._since = 0.0  # when the current wait began (or the body last progressed)
        self._timer: asyncio.TimerHandle | None = None
        self._messages = 0  # requests begun on this connection
        self._head_bytes = 0  # bytes of an incomplete head, past the read it began in
        self._refusal: ApiError | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._since = self.loop.time()
        self._timer = self.loop.call_later(self.limits.header_timeout, self._check_progress)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        messages = self._messages
        super().data_received(data)
        if self._refusal is not None:
            self._refuse(self._refusal)
            return
        if self._state == _IDLE:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        if self._state == _HEAD:
            if messages != self._messages:
                # A head began in this read: the first one's time runs from the connection's
                # opening, a later one's from now.
                if messages:
                    self._since = self.loop.time()
            else:
                # The whole read belongs to the head begun earlier, which is still incomplete.
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self._refusal = RequestHeaderFieldsTooLarge()
                    self._refuse(self._refusal)
                    return
        else:
            self._since = self.loop.time()  # the body progressed
        if self._timer is None:
            self._timer = self.loop.call_later(self._timeout(), self._check_progress)

    def _check_progress(self) -> None:
        """Close a connection whose client stalled past its timeout; else look again later."""
        self._timer = None
        if self._state == _IDLE or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused:
            self._since = now  # we stopped reading (pipelining, a full buffer): not the client
        left = self._since + self._timeout() - now
        if left > 0:
            self._timer = self.loop.call_later(left, self._check_progress)
        elif self._state == _HEAD and self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # let the answer to the previous request finish
        else:
            self.transport.close()

    def _timeout(self) -> float:
        return self.limits.header_timeout if self._state == _HEAD else self.limits.body_timeout

    def _refuse(self, exc: ApiError) -> None:
        """Answer `exc` in the envelope, before any app code ran, and close."""
        if not self.transport.is_closing():
            self.transport.write(render_raw(exc, new_request_id()))
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        self._refuse(MalformedRequest())

    def _unsupported_upgrade_warning(self) -> None:
        """An upgrade is served as plain HTTP (on_headers_complete): nothing to warn about."""

    # httptools' callbacks: a refused request goes no further; data_received answers it.

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._state = _HEAD
        self._messages += 1
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._state = _BODY
        if self._refusal is not None:
            return
        size, hosts = len(self.url), 0
        for name, value in self.headers:
            size += len(name) + len(value) + 4
            if name == b"host":
                hosts += 1
        if size > MAX_HEAD_BYTES:
            self._refusal = RequestHeaderFieldsTooLarge()
        elif hosts != 1 and (hosts > 1 or self.parser.get_http_version() == "1.1"):
            self._refusal = MalformedRequest()
        elif len(self.connections) > self.limits.max_connections:
            self._refusal = ServiceUnavailable()
        else:
            super().on_headers_complete()
            if self.parser.should_upgrade():
                self.cycle.keep_alive = False

    def on_body(self, body: bytes) -> None:
        if self._refusal is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._state = _IDLE
        if self._refusal is None:
            super().on_message_complete()


class EnvelopeH11Protocol(H11Protocol):
    """h11 (the pure-Python parser), with the envelope on unparsable requests."""

    def send_400_response(self, msg: str) -> None:
        self.transport.write(render_raw(MalformedRequest(), new_request_id()))
        self.transport.close()
