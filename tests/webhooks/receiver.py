"""A webhook receiver on 127.0.0.1 for the delivery suites: a real HTTP server in a thread that
records every request and answers what the test scripts (statuses in order, delays); and the
endpoints it stands behind, stored as `cbstop webhooks add` stores them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from cbstop.webhooks.signing import generate_secret
from tests.support import execute, query

T = TypeVar("T")


@dataclass(frozen=True)
class Received:
    """One request as the receiver read it."""

    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    at: float  # time.monotonic() when it arrived

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")


@dataclass
class Script:
    """What to answer: the next of `statuses` (then `default`), after holding the request
    `hold` seconds (each request takes the next of `holds`, then `default_hold`)."""

    statuses: list[int] = field(default_factory=list)
    default: int = 200
    holds: list[float] = field(default_factory=list)
    default_hold: float = 0.0


class Receiver:
    """Records every request; answers per path's `Script` (or the default one)."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.scripts: dict[str, Script] = {}
        self.script = Script()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                status, hold = receiver._record(
                    Received(
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                        time.monotonic(),
                    )
                )
                if hold:
                    time.sleep(hold)
                try:
                    self.send_response(status)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the sender gave up (its timeout): nothing to answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def _record(self, request: Received) -> tuple[int, float]:
        with self._arrived:
            self.requests.append(request)
            self._arrived.notify_all()
            script = self.scripts.get(request.path, self.script)
            status = script.statuses.pop(0) if script.statuses else script.default
            hold = script.holds.pop(0) if script.holds else script.default_hold
        return status, hold

    def received(self, path: str | None = None) -> list[Received]:
        """The requests so far (to one path, if given), in arrival order."""
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def wait_for(
        self, done: Callable[[list[Received]], bool], timeout: float = 15.0
    ) -> list[Received]:
        """Wait until `done(requests)` holds (AssertionError past `timeout`); the requests."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while not done(list(self.requests)):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"receiver: still waiting after {timeout}s; "
                        f"got {[(r.path, r.webhook_id) for r in self.requests]}"
                    )
                self._arrived.wait(left)
            return list(self.requests)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@contextmanager
def receiving() -> Iterator[Receiver]:
    """A started receiver, stopped afterwards."""
    receiver = Receiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


# --- The endpoints a receiver stands behind, and the database's view of them -----------------


def add_endpoint(
    database_url: str,
    endpoint_id: str,
    url: str,
    *,
    organisation_id: str | None = None,
    partner_group_id: str | None = None,
    event_types: str = "",
) -> str:
    """An enabled endpoint, as `cbstop webhooks add` stores one; its signing secret."""
    secret = generate_secret()
    execute(
        database_url,
        "INSERT INTO webhook_endpoints (id, organisation_id, partner_group_id, url, secret, "
        "event_types, status, disabled_reason, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, 'enabled', NULL, ?)",
        endpoint_id,
        organisation_id,
        partner_group_id,
        url,
        secret,
        event_types,
        time.time_ns() // 1000,
    )
    return secret


def deliveries(database_url: str) -> dict[tuple[str, str], tuple[str, int]]:
    """(endpoint, event) -> (state, attempts) of every delivery."""
    rows = query(
        database_url, "SELECT endpoint_id, event_id, state, attempts FROM webhook_deliveries"
    )
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


def attempts(database_url: str, event_id: str | None = None) -> list[tuple[Any, ...]]:
    """(endpoint, event, attempt, status_code, error) of every attempt (of one event), in order."""
    rows = query(
        database_url,
        "SELECT endpoint_id, event_id, attempt, status_code, error FROM webhook_attempts "
        "ORDER BY endpoint_id, event_id, attempt",
    )
    return [r for r in rows if event_id is None or r[1] == event_id]


def eventually(check: Callable[[], T], timeout: float = 15.0) -> T:
    """`check()`'s value once it returns without AssertionError, retried until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(0.02)
