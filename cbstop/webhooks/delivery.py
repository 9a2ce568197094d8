"""Webhook delivery (CONTRACT 3.5): each process POSTs the deliveries that fan-out made, signed,
at least once, retried on a schedule, each attempt made by exactly one process.

The `webhook_deliveries` table is the queue. A process claims due deliveries with one
statement that moves their `next_attempt_at` past the attempt's longest possible time (a
lease) and counts the attempt; on PostgreSQL its inner SELECT skips rows another instance is
claiming (`FOR UPDATE SKIP LOCKED`), on SQLite the write lock admits one claimant at a time.
Nothing else marks a delivery as taken, so a process that dies mid-attempt leaves it due again
when the lease ends, and another (or the restarted one) makes the attempt again: at least
once. The outcome is written only if the delivery is still the one claimed (`attempts` as
claimed, still pending), so a late answer to an attempt whose lease ran out cannot overwrite
the outcome of the attempt made after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import time
from typing import NamedTuple

import httpx
import orjson

from cbstop import __version__
from cbstop.db.database import Connection, Database, Row
from cbstop.errors import ServiceUnavailable
from cbstop.events.schemas import COLUMNS, Event, encode, rfc3339
from cbstop.idempotency.keys import now_micros
from cbstop.observability.logging import Throttle, log
from cbstop.observability.metrics import Metrics
from cbstop.settings import Settings
from cbstop.tasks import cancelled, guarded
from cbstop.webhooks import signing

# Seconds a lease lasts beyond the attempt's timeout: time to write the outcome afterwards.
# A lease that ends before its attempt's outcome is written lets a second attempt start; the
# guard on `attempts` keeps that harmless, but it is a duplicate POST the receiver sees.
LEASE_MARGIN = 5.0
# Seconds `stop` lets attempts in flight finish; the rest are cancelled and, their leases
# ending, attempted again later (by this process restarted, or another).
STOP_GRACE = 3.0
# Up to this share of a retry's delay is added or taken away at random, so that deliveries
# that failed together (an endpoint down) do not all come back in the same instant.
JITTER = 0.1
# Response bytes read before the connection is dropped: only the status matters.
MAX_RESPONSE_BYTES = 64 * 1024
MICROS = 1_000_000

# --- Claiming ------------------------------------------------------------------------------
# The claimed delivery, its endpoint (NULL if removed) and its event (NULL if purged), as
# `Claim.of` reads them: endpoint_id, event_id, attempts, url, secret, status, then COLUMNS.

# $1 now: whether any delivery is due.
DUE = """
SELECT EXISTS (
    SELECT 1 FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= $1)
"""

# $1 now, $2 how many, $3 the lease's end.
CLAIM_POSTGRES = f"""
WITH due AS (
    SELECT endpoint_id, event_id FROM webhook_deliveries
    WHERE state = 'pending' AND next_attempt_at <= $1
    ORDER BY next_attempt_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE webhook_deliveries d SET next_attempt_at = $3, attempts = d.attempts + 1
    FROM due
    WHERE d.endpoint_id = due.endpoint_id AND d.event_id = due.event_id
    RETURNING d.endpoint_id, d.event_id, d.attempts
)
SELECT c.endpoint_id, c.event_id, c.attempts, w.url, w.secret, w.status, {COLUMNS}
FROM claimed c
LEFT JOIN webhook_endpoints w ON w.id = c.endpoint_id
LEFT JOIN events e ON e.id = c.event_id
"""

# SQLite (no data-modifying CTEs; RETURNING cannot join): the claim, then what it claimed, in
# one write transaction. $1 now, $2 how many, $3 the lease's end.
CLAIM_SQLITE = """
UPDATE webhook_deliveries SET next_attempt_at = $3, attempts = attempts + 1
WHERE rowid IN (
    SELECT rowid FROM webhook_deliveries
    WHERE state = 'pending' AND next_attempt_at <= $1
    ORDER BY next_attempt_at
    LIMIT $2)
RETURNING endpoint_id, event_id
"""
# $1 a JSON array of [endpoint_id, event_id] pairs just claimed.
CLAIMED_SQLITE = f"""
SELECT d.endpoint_id, d.event_id, d.attempts, w.url, w.secret, w.status, {COLUMNS}
FROM json_each($1) j
JOIN webhook_deliveries d
  ON d.endpoint_id = json_extract(j.value, '$[0]') AND d.event_id = json_extract(j.value, '$[1]')
LEFT JOIN webhook_endpoints w ON w.id = d.endpoint_id
LEFT JOIN events e ON e.id = d.event_id
"""

# --- Outcomes ------------------------------------------------------------------------------
# Each only if the delivery is still the one claimed: $1 endpoint, $2 event, $3 the attempts
# the claim counted.
DELIVERED = """
UPDATE webhook_deliveries SET state = 'delivered', next_attempt_at = NULL
WHERE endpoint_id = $1 AND event_id = $2 AND attempts = $3 AND state = 'pending'
"""
# $4 when the next attempt is due.
RETRY = """
UPDATE webhook_deliveries SET next_attempt_at = $4
WHERE endpoint_id = $1 AND event_id = $2 AND attempts = $3 AND state = 'pending'
"""
FAILED = """
UPDATE webhook_deliveries SET state = 'failed', next_attempt_at = NULL
WHERE endpoint_id = $1 AND event_id = $2 AND attempts = $3 AND state = 'pending'
"""
# No request was made: the attempt the claim counted is taken back.
CANCEL = """
UPDATE webhook_deliveries SET state = 'cancelled', next_attempt_at = NULL, attempts = attempts - 1
WHERE endpoint_id = $1 AND event_id = $2 AND attempts = $3 AND state = 'pending'
"""

# 410 Gone: the receiver asks never to be sent anything again. $1 endpoint, $2 the reason.
DISABLE = """
UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = $2
WHERE id = $1 AND status = 'enabled'
"""
# $1 endpoint: everything still pending for it, in flight elsewhere included (their outcomes'
# guards then match nothing).
CANCEL_ENDPOINT = """
UPDATE webhook_deliveries SET state = 'cancelled', next_attempt_at = NULL
WHERE endpoint_id = $1 AND state = 'pending'
"""

# PostgreSQL: the endpoint's row, held against `webhooks remove` until the attempt is recorded
# (remove locks it for update first: one of the two waits for the other, and an attempt never
# meets the foreign key of an endpoint deleted under it). SQLite has one writer at a time.
HOLD_ENDPOINT_POSTGRES = "SELECT 1 FROM webhook_endpoints WHERE id = $1 FOR KEY SHARE"

# Every attempt made, whatever became of the delivery meanwhile (the endpoint may have been
# removed: then there is nothing to record it against). $1 endpoint, $2 event, $3 attempt,
# $4 started, $5 duration, $6 status code, $7 error, $8 worker. (CASTs: in a SELECT list
# PostgreSQL cannot infer a parameter's type from the column it is inserted into.)
RECORD = """
INSERT INTO webhook_attempts
    (endpoint_id, event_id, attempt, started_at, duration_us, status_code, error, worker)
SELECT $1, $2, CAST($3 AS INTEGER), CAST($4 AS BIGINT), CAST($5 AS BIGINT),
       CAST($6 AS INTEGER), CAST($7 AS TEXT), $8
WHERE EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = $1)
ON CONFLICT DO NOTHING
"""


class Claim(NamedTuple):
    """One delivery claimed for one attempt, with what the attempt needs."""

    endpoint_id: str
    event_id: str
    attempt: int  # this attempt's number, from 1
    url: str | None  # None: the endpoint was removed
    secret: str | None
    enabled: bool
    event: Event | None  # None: the event was purged

    @classmethod
    def of(cls, row: Row) -> Claim:
        """A claim from a row of CLAIM_POSTGRES or CLAIMED_SQLITE."""
        event = Event.of(row, 6) if row[6] is not None else None
        return cls(row[0], row[1], int(row[2]), row[3], row[4], row[5] == "enabled", event)


class Outcome(NamedTuple):
    """What one attempt came to."""

    status_code: int | None
    error: str | None
    label: str  # the metric's: delivered, failed (another status), gone, timeout, error


async def claim(conn: Connection, now: int, limit: int, lease_end: int) -> list[Claim]:
    """Claim up to `limit` due deliveries, oldest first, until `lease_end`, inside a write
    unit of work (the caller's)."""
    if conn.dialect == "postgresql":
        return [Claim.of(r) for r in await conn.fetch(CLAIM_POSTGRES, now, limit, lease_end)]
    keys = await conn.fetch(CLAIM_SQLITE, now, limit, lease_end)
    if not keys:
        return []
    pairs = "[" + ",".join(_json_pair(r[0], r[1]) for r in keys) + "]"
    return [Claim.of(r) for r in await conn.fetch(CLAIMED_SQLITE, pairs)]


def _json_pair(a: str, b: str) -> str:
    return orjson.dumps([a, b]).decode()


def retry_at(now: int, attempt: int, delays: tuple[float, ...]) -> int | None:
    """When the attempt after a failed `attempt` is due (± `JITTER`), or None: no more."""
    if attempt > len(delays):
        return None
    delay = delays[attempt - 1] * (1.0 + random.uniform(-JITTER, JITTER))
    return now + int(delay * MICROS)


class Deliverer:
    """One process's delivery loop: claims due deliveries and attempts them, at most
    `settings.webhook_concurrency` at once, when poked (fan-out made some) or every
    `settings.event_poll_interval`."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        worker_name: str,
        metrics: Metrics | None = None,
    ) -> None:
        self._db = db
        self._settings = settings
        self._worker = worker_name
        self._metrics = metrics
        self._timeout = settings.webhook_timeout
        self._delays = settings.webhook_retry_delays
        self._capacity = settings.webhook_concurrency
        self._lease = int((settings.webhook_timeout + LEASE_MARGIN) * MICROS)
        self._poked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._attempts: set[asyncio.Task[None]] = set()
        # The last claim took every free slot: more may be due than it could take.
        self._saturated = False
        self._client: httpx.AsyncClient | None = None
        self._trouble = Throttle(10.0)
        self._user_agent = f"cbstop-webhooks/{__version__}"

    def start(self) -> None:
        """Start the loop (inside the running event loop)."""
        self._client = httpx.AsyncClient(
            timeout=self._timeout,
            follow_redirects=False,
            limits=httpx.Limits(
                max_connections=self._capacity, max_keepalive_connections=self._capacity
            ),
            # Never the environment's proxies or .netrc: the URL is the operator's, as given.
            trust_env=False,
        )
        self._task = asyncio.get_running_loop().create_task(self._run(), name="cbstop-webhooks")

    async def stop(self) -> None:
        """Stop claiming; let attempts in flight finish for up to `STOP_GRACE` seconds, then
        cancel them (their leases end and they are attempted again later)."""
        task, self._task = self._task, None
        await cancelled(task)
        if self._attempts:
            await asyncio.wait(set(self._attempts), timeout=STOP_GRACE)
        for attempt in list(self._attempts):
            await cancelled(attempt)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def poke(self) -> None:
        """Fan-out made deliveries: look for due ones now, not at the next poll."""
        self._poked.set()

    async def _run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for (as in the event pump: a cancellation at the
            # moment of a poke must not be swallowed).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.event_poll_interval):
                    await self._poked.wait()
            self._poked.clear()
            await self._claim_and_attempt()

    async def _claim_and_attempt(self) -> None:
        free = self._capacity - len(self._attempts)
        if free <= 0:
            return  # an attempt ending pokes the loop
        claims = await guarded(self._trouble, "claiming webhook deliveries", self._claim(free))
        if claims is None:
            return
        for one in claims:
            task = asyncio.get_running_loop().create_task(self._attempt(one))
            self._attempts.add(task)
            task.add_done_callback(self._attempt_done)
        self._saturated = len(claims) == free

    async def _claim(self, free: int) -> list[Claim]:
        now = now_micros()
        # A read first: an idle process takes no write lock (on SQLite, the file's) at every
        # poll.
        async with self._db.connection() as conn:
            if not await conn.fetchval(DUE, now):
                return []
        async with self._db.single_statement_write() as conn:
            return await claim(conn, now, free, now + self._lease)

    def _attempt_done(self, task: asyncio.Task[None]) -> None:
        self._attempts.discard(task)
        if self._saturated:
            self._poked.set()

    async def _attempt(self, one: Claim) -> None:
        try:
            if one.url is None or not one.enabled or one.event is None or one.secret is None:
                # Disabled or removed after fan-out, or the event purged: nothing to send.
                await self._write(CANCEL, one.endpoint_id, one.event_id, one.attempt)
                return
            started = now_micros()
            clock = time.monotonic()
            outcome = await self._post(one.url, one.secret, one.event)
            duration = int((time.monotonic() - clock) * MICROS)
            await self._record(one, outcome, started, duration)
        except ServiceUnavailable as exc:
            # The lease ends and the delivery is attempted again: at least once.
            self._trouble.warn("recording a webhook attempt", exc)
        except Exception:
            log.exception("webhook delivery %s -> %s failed", one.event_id, one.endpoint_id)

    async def _post(self, url: str, secret: str, event: Event) -> Outcome:
        assert self._client is not None
        body = encode(event)
        try:
            signed = signing.headers(secret, event.id, int(time.time()), body)
        except ValueError as exc:
            return Outcome(None, f"invalid signing secret: {exc}", "error")
        headers = [
            ("content-type", "application/json"),
            ("user-agent", self._user_agent),
            *signed,
        ]
        try:
            # The whole attempt within the timeout, not each read: a receiver that drips its
            # answer must not hold the attempt past its lease.
            async with asyncio.timeout(self._timeout):
                async with self._client.stream("POST", url, content=body, headers=headers) as r:
                    status = r.status_code
                    read = 0
                    async for chunk in r.aiter_raw():
                        read += len(chunk)
                        if read >= MAX_RESPONSE_BYTES:
                            break
        except (TimeoutError, httpx.TimeoutException):
            return Outcome(None, "timeout", "timeout")
        except httpx.HTTPError as exc:
            return Outcome(None, _error_text(exc), "error")
        if 200 <= status < 300:
            return Outcome(status, None, "delivered")
        if status == 410:
            return Outcome(status, None, "gone")
        return Outcome(status, None, "failed")

    async def _record(self, one: Claim, outcome: Outcome, started: int, duration: int) -> None:
        now = now_micros()
        guard = (one.endpoint_id, one.event_id, one.attempt)
        async with self._db.transaction(write=True) as conn:
            if conn.dialect == "postgresql" and (
                await conn.fetchrow(HOLD_ENDPOINT_POSTGRES, one.endpoint_id) is None
            ):
                return  # removed meanwhile, with its deliveries: nothing to record against
            await conn.execute(
                RECORD,
                *guard,
                started,
                duration,
                outcome.status_code,
                outcome.error,
                self._worker,
            )
            if outcome.label == "delivered":
                await conn.execute(DELIVERED, *guard)
            elif outcome.label == "gone":
                reason = f"the endpoint answered 410 Gone at {rfc3339(now_micros())}"
                await conn.execute(DISABLE, one.endpoint_id, reason)
                await conn.execute(CANCEL_ENDPOINT, one.endpoint_id)
            else:
                due = retry_at(now, one.attempt, self._delays)
                if due is None:
                    await conn.execute(FAILED, *guard)
                else:
                    await conn.execute(RETRY, *guard, due)
        if self._metrics is not None:
            self._metrics.webhook_attempt(outcome.label)
            if outcome.label == "delivered" and one.event is not None:
                self._metrics.webhook_delivered((now - one.event.created_at) / MICROS)
        if outcome.label == "gone":
            log.warning("webhook endpoint %s answered 410 Gone: disabled", one.endpoint_id)

    async def _write(self, sql: str, *args: object) -> None:
        async with self._db.single_statement_write() as conn:
            await conn.execute(sql, *args)


def _error_text(exc: httpx.HTTPError) -> str:
    """What stood in for a status: `connection refused`, or the exception's name and text."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError) or (
            isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED
        ):
            return "connection refused"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.ConnectError) and "refused" in str(exc).lower():
        return "connection refused"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]
