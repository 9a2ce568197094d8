"""Webhook delivery, reported without a target (issue 13): how many events a second `cbstop serve`
delivers to a local receiver, and how long after the write each one arrives.

After a size's rounds, on a server that ran them: a receiver in this process (raw asyncio HTTP
on 127.0.0.1, in a thread of its own, answering 204 and recording each arrival's time and
Standard Webhooks headers), an endpoint for the organisation key's organisation inserted
straight into `webhook_endpoints`, then `create` under wrk for the run's duration, as fast as
wrk can. The events to expect are the organisation's integration count after minus before
(every create records one event, and no other write runs). Then the receiver waits for them.

Reported: the creates' req/s; events delivered per second (first arrival to last); the lag
from each event's `created_at` (taken at the write, just before its commit) to its arrival,
p50/p99/max; duplicates (at least once allows them), missing ones, and signatures that the
reference verifier (`standardwebhooks`, a development dependency) refuses. Both clocks are
this machine's wall clock. Arrivals of events created before the run (the rounds' last writes,
fanned out after the endpoint was added) are counted apart (`earlier`) and left out.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import orjson
import psycopg

from bench.procs import BenchError, log
from bench.worlds import BenchWorld
from bench.wrk import WrkResult

ENDPOINT_ID = "we_bench_delivery"
HOOK_PATH = "/hook"
# Give up waiting when nothing has arrived for this long (the server has stopped delivering).
IDLE_SECONDS = 15.0

INSERT_ENDPOINT = (
    "INSERT INTO webhook_endpoints (id, organisation_id, partner_group_id, url, secret, "
    "event_types, status, disabled_reason, created_at) "
    "VALUES ({p}, {p}, NULL, {p}, {p}, '', 'enabled', NULL, {p})"
)
# Afterwards: no more deliveries to a receiver that is gone (and nothing retried against it).
DISABLE_ENDPOINT = (
    "UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = 'bench over' "
    "WHERE id = {p}"
)


@dataclass(frozen=True)
class Arrival:
    """One POST the receiver got: when (µs since the epoch), its webhook headers, its body."""

    at_us: int
    webhook_id: str
    timestamp: str
    signature: str
    body: bytes


@dataclass
class Receiver:
    """A minimal HTTP/1.1 server answering every request 204 (keep-alive), recording each
    arrival; in a thread with its own event loop, so the timestamps do not wait on the
    harness."""

    arrivals: list[Arrival] = field(default_factory=list)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _stop: asyncio.Event | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{HOOK_PATH}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                at = time.time_ns() // 1000
                headers: dict[str, str] = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.arrivals.append(
                    Arrival(
                        at,
                        headers.get("webhook-id", ""),
                        headers.get("webhook-timestamp", ""),
                        headers.get("webhook-signature", ""),
                        body,
                    )
                )
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            # The receiver stopping: end quietly. (Left to propagate, asyncio's stream
            # callback logs a traceback for every connection still open.)
            pass
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    def _serve(self, ready: threading.Event) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()
            server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            await self._stop.wait()
            server.close()
            # The server's keep-alive connections end with the receiver, not with its loop.
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()

        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(main())
        finally:
            self._loop.close()

    def start(self) -> None:
        """Listen on a free port of 127.0.0.1; return once it does."""
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise BenchError("the webhook receiver did not start")

    def stop(self) -> None:
        """Stop listening and wait for the thread."""
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def wait_for(
        self,
        expected: int,
        idle: float = IDLE_SECONDS,
        distinct: Callable[[list[Arrival]], int] | None = None,
    ) -> None:
        """Until `expected` distinct events arrived (as `distinct` counts them: by default
        every webhook-id), or none arrived for `idle` seconds."""
        count = distinct or (lambda arrivals: len({a.webhook_id for a in arrivals}))
        seen = 0
        last_change = time.monotonic()
        while True:
            distinct_now = count(list(self.arrivals))
            if distinct_now >= expected:
                return
            if distinct_now != seen:
                seen, last_change = distinct_now, time.monotonic()
            elif time.monotonic() - last_change > idle:
                return
            time.sleep(0.05)


class Since:
    """Counts the distinct events of the arrivals whose event was created at or after
    `since_us`, parsing each body once: the endpoint also gets the events of the rounds'
    last writes that the server had not fanned out yet when it was added."""

    def __init__(self, since_us: int) -> None:
        self.since_us = since_us
        self.parsed = 0
        self.ids: set[str] = set()

    def ours(self, arrival: Arrival) -> bool:
        """Whether `arrival` is of an event created since."""
        return parse_rfc3339_us(orjson.loads(arrival.body)["created_at"]) >= self.since_us

    def __call__(self, arrivals: list[Arrival]) -> int:
        for arrival in arrivals[self.parsed :]:
            if self.ours(arrival):
                self.ids.add(arrival.webhook_id)
        self.parsed = len(arrivals)
        return len(self.ids)


def parse_rfc3339_us(text: str) -> int:
    """`2026-12-03T10:15:05.123456Z` as microseconds since the epoch."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def _percentile(sorted_values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank: what wrk's percentiles also are."""
    rank = max(1, min(len(sorted_values), round(q * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def delivery_stats(
    arrivals: list[Arrival],
    expected: int,
    writes: WrkResult | None,
    secret: str | None = None,
    verify: Callable[[str, Arrival], bool] | None = None,
) -> dict[str, Any]:
    """The report's row for one delivery run: rates, lag percentiles (ms), and what went
    wrong (duplicates, missing, bad signatures)."""
    first: dict[str, Arrival] = {}
    for arrival in sorted(arrivals, key=lambda a: a.at_us):
        first.setdefault(arrival.webhook_id, arrival)
    lags = sorted(
        (a.at_us - parse_rfc3339_us(orjson.loads(a.body)["created_at"])) / 1000
        for a in first.values()
    )
    times = sorted(a.at_us for a in first.values())
    span = (times[-1] - times[0]) / 1e6 if len(times) > 1 else 0.0
    bad = None
    if secret is not None and verify is not None:
        bad = sum(not verify(secret, a) for a in arrivals)
    return {
        "expected": expected,
        "delivered": len(first),
        "duplicates": len(arrivals) - len(first),
        "missing": max(0, expected - len(first)),
        "bad_signatures": bad,
        "writes_per_s": writes.rps if writes is not None else None,
        "delivered_per_s": round(len(first) / span, 1) if span > 0 else None,
        "lag_p50_ms": round(_percentile(lags, 0.5), 2) if lags else None,
        "lag_p99_ms": round(_percentile(lags, 0.99), 2) if lags else None,
        "lag_max_ms": round(lags[-1], 2) if lags else None,
    }


def standard_verifier() -> Callable[[str, Arrival], bool] | None:
    """The reference verifier of Standard Webhooks, if installed (a development dependency)."""
    try:
        from standardwebhooks.webhooks import Webhook
    except ImportError:
        return None

    def verify(secret: str, arrival: Arrival) -> bool:
        headers = {
            "webhook-id": arrival.webhook_id,
            "webhook-timestamp": arrival.timestamp,
            "webhook-signature": arrival.signature,
        }
        try:
            # The timestamp is checked against now (5 minutes' tolerance): verified straight
            # after the run, well inside it.
            Webhook(secret).verify(arrival.body, headers)
        except Exception:  # the verifier refuses with several exception types
            return False
        return True

    return verify


def _execute(url: str, sql: str, *params: Any) -> None:
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url[len("sqlite:///") :])) as lite, lite:
            lite.execute(sql.format(p="?"), params)
        return
    with psycopg.connect(url) as pg:
        pg.execute(sql.format(p="%s"), params)


def add_endpoint(url: str, organisation: str, target: str) -> str:
    """An enabled endpoint of `organisation` for every event type, POSTing to `target`,
    inserted as `cbstop webhooks add` would store it; its signing secret."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    _execute(
        url, INSERT_ENDPOINT, ENDPOINT_ID, organisation, target, secret, time.time_ns() // 1000
    )
    return secret


def _org_count(server_url: str, key: str) -> int:
    response = httpx.get(
        server_url + "/v1/integrations?limit=1",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30.0,
    )
    if response.status_code != 200:
        raise BenchError(f"webhook delivery: GET /v1/integrations {response.status_code}")
    count: int = response.json()["count"]
    return count


def _settled_count(server_url: str, key: str) -> int:
    """The organisation's count once it stops moving: wrk ends with requests in flight, and
    the server finishes (and commits) them after wrk has gone."""
    count = _org_count(server_url, key)
    while True:
        time.sleep(0.5)
        again = _org_count(server_url, key)
        if again == count:
            return count
        count = again


def measure_delivery(
    server_url: str,
    database_url: str,
    world: BenchWorld,
    create: Callable[[], WrkResult],
    receiver: Receiver | None = None,
) -> dict[str, Any]:
    """One delivery run against the server at `server_url` (serving `database_url`):
    `create()` makes the writes (wrk's `create`); the report's row."""
    receiver = receiver or Receiver()
    receiver.start()
    try:
        secret = add_endpoint(database_url, world.org_key_organisation, receiver.url)
        try:
            before = _org_count(server_url, world.org_key)
            since = Since(time.time_ns() // 1000)
            writes = create()
            expected = _settled_count(server_url, world.org_key) - before
            log(f"webhook delivery: {expected} events written, waiting for their deliveries")
            started = time.monotonic()
            receiver.wait_for(expected, distinct=since)
            waited = time.monotonic() - started
        finally:
            _execute(database_url, DISABLE_ENDPOINT, ENDPOINT_ID)
    finally:
        receiver.stop()
    ours = [a for a in receiver.arrivals if since.ours(a)]
    stats = delivery_stats(ours, expected, writes, secret, standard_verifier())
    stats["earlier"] = len(receiver.arrivals) - len(ours)
    stats["waited_s"] = round(waited, 1)
    return stats
