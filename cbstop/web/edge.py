"""The ASGI application: every request, from its scope to the bytes of its answer.

For each request the edge gives it an id, finds its operation in the route table, sheds an
API request past the worker's `max_in_flight` (503), runs the checks the operation declares
in the contract's order — the address's failure budget (429), key (401), the owner's quota
(429), ability (403), Idempotency-Key (400), query (422), body (415/413/400/422) — then its
handler, and adds the rate limit's fields to the answer; for a request
with an Idempotency-Key, a stored answer comes before any later refusal (CONTRACT 3.1). It
turns every error into the envelope through the one renderer; sends `X-Request-Id` and
`Cache-Control: no-store` on every answer but the docs page's vendored files; and writes the
access line and the metrics, labelled with the path template. It also runs the ASGI
lifespan (open the database on startup, close it on shutdown).
"""

from __future__ import annotations

import asyncio
import time

from cbstop.auth.service import Principal
from cbstop.errors import (
    ApiError,
    IdempotencyKeyReused,
    InternalError,
    InvalidIdempotencyKey,
    MethodNotAllowed,
    NotFound,
    Overloaded,
    ServiceUnavailable,
    Unauthorised,
)
from cbstop.idempotency import store
from cbstop.idempotency.keys import Answer, Keyed, fingerprint, parse_key
from cbstop.observability import logging as obs_logging
from cbstop.observability.logging import log
from cbstop.web.errors import render
from cbstop.web.http import (
    Receive,
    Repeated,
    Response,
    Scope,
    Send,
    answer_response,
    common_headers,
    parse_body,
    read_json_object,
    request_id,
    sole_header,
)
from cbstop.web.routing import Call, Operation, RouteTable, parse_query
from cbstop.web.state import AppState

UNMATCHED = "unmatched"
# Routes left out of the access log when `access_log_probes` is off (still in the metrics).
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})


class Edge:
    """ASGI: the route table over one process's state."""

    def __init__(self, table: RouteTable, state: AppState) -> None:
        self.table = table
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        rid = request_id(scope)
        state = self.state
        method: str = scope["method"]
        call: Call | None = None
        found = self.table.match(scope["path"])
        if found is None:
            route = UNMATCHED
            response = render(NotFound())
        else:
            item, params = found
            route = item.template
            op = item.operations.get("GET" if method == "HEAD" else method)
            if op is None:
                response = render(MethodNotAllowed(item.allow))
            elif op.ability is None:
                call = Call(state, scope, receive, rid, params)
                response = await self._served(op, call)
            elif state.in_flight >= state.max_in_flight:
                # Shed at once: a quick 503 a client retries beats a queue every request waits in.
                state.metrics.request_shed()
                response = render(Overloaded())
            else:
                call = Call(state, scope, receive, rid, params)
                state.in_flight += 1
                try:
                    response = await self._served(op, call)
                finally:
                    state.in_flight -= 1
        duration = time.perf_counter() - start
        # Counted before it is sent: a client holding an answer finds it in the next scrape,
        # whatever becomes of this worker (even SIGKILL) the moment after.
        state.metrics.observe(method, route, response.status, duration)
        await _send(send, response, rid, head=method == "HEAD")
        settings = state.settings
        if settings.access_log and (settings.access_log_probes or route not in PROBES):
            principal = call.principal_ if call is not None else None
            client = scope.get("client")
            obs_logging.access_line(
                request_id=rid,
                method=method,
                route=route,
                status=response.status,
                duration=duration,
                # With trusted proxy headers, uvicorn has put the forwarded address here.
                client=client[0] if client else None,
                user_agent=_user_agent(scope),
                size=0 if method == "HEAD" else len(response.body),
                key_id=principal.key_id if principal else None,
                owner=principal.owner if principal else None,
            )

    async def _served(self, op: Operation, call: Call) -> Response:
        """The operation's answer, with the rate limit's fields; a request the drain timeout
        cancelled gets 503."""
        try:
            response = await self._run(op, call)
        except asyncio.CancelledError:
            if not self.state.draining:
                raise
            response = _cut_short(op)
        if call.rate_fields:
            response.headers = [*response.headers, *call.rate_fields]
        return response

    async def _authenticate(self, op: Operation, call: Call) -> Principal:
        """The caller's key, within the rate limits (CONTRACT 3.3): 429 for an address past
        its failure budget → 401 → 429 for a spent quota. The ability is checked after."""
        limiter = self.state.limiter
        client = call.scope.get("client")
        address = client[0] if client else "unknown"
        if limiter is not None:
            limiter.check_address(address)
        try:
            authorization = sole_header(call.scope, b"authorization")
            if isinstance(authorization, Repeated):
                raise Unauthorised()
            principal = await self.state.authenticator.authenticate(authorization)
        except Unauthorised:
            if limiter is not None:
                call.rate_fields = await limiter.failed(address)
            raise
        call.principal_ = principal
        if limiter is not None:
            call.rate_fields = await limiter.admit(principal.owner, op.limit_key, address)
        return principal

    async def _run(self, op: Operation, call: Call) -> Response:
        """The operation's checks, then its handler; any error as the envelope."""
        try:
            if op.ability is not None:
                principal = await self._authenticate(op, call)
                principal.require(op.ability)
            key = None
            if op.idempotent:
                given = sole_header(call.scope, b"idempotency-key")
                if isinstance(given, Repeated):
                    raise InvalidIdempotencyKey()
                key = parse_key(given)
            if op.query:
                call.query = parse_query(op.query, call.scope["query_string"])
            if op.body is not None:
                raw = await read_json_object(call.scope, call.receive)
                if key is not None:
                    scope = call.scope
                    call.keyed = keyed = Keyed.of(
                        call.principal.owner,
                        key,
                        fingerprint(scope["method"], scope["path"], raw),
                        self.state.settings.idempotency_ttl,
                    )
                    kept = self.state.answers.recall(keyed)
                    if kept is not None:
                        return answer_response(kept, replayed=True)
                call.body = parse_body(op.body, raw)
            response = await op.handler(call)
            if call.keyed is not None and response.answer is not None:
                self.state.answers.keep(call.keyed, response.answer)
            return response
        except ApiError as exc:
            if call.keyed is not None and _idempotency_precedes(exc):
                # CONTRACT 3.1: a key's stored answer comes before the checks of 1.6.
                try:
                    stored = await self._recall(call.keyed)
                except ApiError as other:
                    exc = other
                else:
                    if stored is not None:
                        self.state.answers.keep(call.keyed, stored)
                        return answer_response(stored, replayed=True)
            if exc.status == 503:
                self.state.warn_unavailable(exc)
            return render(exc)
        except Exception:
            log.exception("unhandled error in %s %s", op.method, op.path)
            return render(InternalError())

    async def _recall(self, keyed: Keyed) -> Answer | None:
        async with self.state.db.connection() as conn:
            return await store.recall(conn, keyed)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.state.start()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.state.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _idempotency_precedes(exc: ApiError) -> bool:
    """Whether a keyed request's stored answer would have come before this refusal: the
    checks of CONTRACT 1.6 (422, 404) and 412 come after the key's, those of the headers and
    the body's bytes (401, 403, 400, 413, 415) before it."""
    return exc.status in (404, 412, 422) and not isinstance(exc, IdempotencyKeyReused)


# Characters of a User-Agent an access line keeps: a line stays one write to the pipe
# (under 4 KiB, written whole), so lines of several workers never interleave.
USER_AGENT_LIMIT = 512


def _user_agent(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"user-agent":
            return bytes(value[:USER_AGENT_LIMIT]).decode("latin-1")
    return None


def _cut_short(op: Operation) -> Response:
    """The answer to a request the drain timeout cancelled: 503 in the envelope, and the
    connection closed, rather than uvicorn's plain-text 500 and a traceback per request.

    A transaction it had open rolls back; a write already at the database may still have
    taken effect, as with any answer lost in transit.
    """
    log.warning("%s %s cut short: the drain timeout expired", op.method, op.path)
    response = render(ServiceUnavailable())
    response.headers.append((b"connection", b"close"))
    return response


async def _send(send: Send, response: Response, rid: str, *, head: bool = False) -> None:
    common = common_headers(rid)
    if any(name == b"cache-control" for name, _ in response.headers):
        # An answer that says how it may be cached (the docs page's vendored files) says so
        # alone: two Cache-Control headers would combine to the strictest.
        common = [(name, value) for name, value in common if name != b"cache-control"]
    if response.status == 304:
        # No content, and no Content-Length: it would have to be the 200's (RFC 9110 8.6).
        headers = [*common, *response.headers]
    else:
        headers = [
            (b"content-type", response.content_type),
            (b"content-length", str(len(response.body)).encode()),
            *common,
            *response.headers,
        ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else response.body})
