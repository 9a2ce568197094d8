"""What every request of one process shares: settings, the database, keys, metrics, limits."""

from __future__ import annotations

import os
import socket
import sys

from cbstop.auth.service import Authenticator
from cbstop.auth.upkeep import KeyUpkeep
from cbstop.db.database import Database, open_database
from cbstop.events.pump import EventPump
from cbstop.idempotency.store import AnswerCache, Purger
from cbstop.observability.logging import Throttle, log
from cbstop.observability.metrics import Metrics
from cbstop.ratelimit.limiter import RateLimiter
from cbstop.settings import Settings
from cbstop.webhooks.delivery import Deliverer


class AppState:
    """One process's shared state; `start` and `stop` run at the ASGI lifespan's edges."""

    db: Database
    authenticator: Authenticator
    purger: Purger | None = None
    key_upkeep: KeyUpkeep | None = None
    limiter: RateLimiter | None = None
    events: EventPump | None = None
    deliverer: Deliverer | None = None

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.draining = False
        # API requests this worker runs now, and how many it may (CBSTOP_MAX_IN_FLIGHT).
        self.in_flight = 0
        self.max_in_flight = settings.max_in_flight or sys.maxsize
        self.openapi_json = b""
        # Answers stored under Idempotency-Keys, kept for retries that reach this process.
        self.answers = AnswerCache(settings.idempotency_cache_size)
        self._database_trouble = Throttle(1.0)

    async def start(self) -> None:
        """Open the database (connections open on demand: a database that is down is fine),
        start purging expired idempotency keys and writing key upkeep in the background, and
        open the rate limits' store (Redis connects on demand too)."""
        self.db = await open_database(self.settings.database_url, self.settings)
        settings = self.settings
        # Re-hashes and last uses that requests note, written in the background (CONTRACT 3.6).
        self.key_upkeep = KeyUpkeep(self.db, settings.key_last_used_interval)
        self.authenticator = Authenticator(
            self.db, settings.key_secrets, settings.key_cache_ttl, self.key_upkeep
        )
        self.key_upkeep.start()
        self.purger = Purger(self.db, settings.idempotency_ttl, settings.idempotency_purge_interval)
        self.purger.start()
        # The rate limits (CONTRACT 3.3): None when both are off.
        self.limiter = RateLimiter.of(settings, self.metrics, lambda: self.in_flight > 1)
        if self.limiter is not None:
            await self.limiter.start()
        # Webhook deliveries attempted from this process (CONTRACT 3.5); every process of every
        # instance runs one, and each attempt is claimed by exactly one of them.
        self.deliverer = Deliverer(
            self.db, settings, f"{socket.gethostname()}:{os.getpid()}", self.metrics
        )
        self.deliverer.start()
        # Events numbered in commit order, fanned out to webhooks, purged (CONTRACT 3.4, 3.5).
        self.events = EventPump(
            self.db,
            poll_interval=settings.event_poll_interval,
            retention_days=settings.event_retention_days,
            purge_interval=settings.event_purge_interval,
            on_deliveries=self.deliverer.poke,
        )
        self.events.start()
        # This worker's gauges, written for the other workers' scrapes (metrics.py).
        self.metrics.start(self.db.pool_stats)

    async def stop(self) -> None:
        """Stop numbering events and delivering webhooks (attempts in flight get a few
        seconds), stop purging expired idempotency keys; close the rate limits' store; write
        pending key upkeep; close the database."""
        await self.metrics.stop()
        if self.events is not None:
            await self.events.stop()
        if self.deliverer is not None:
            await self.deliverer.stop()
        if self.limiter is not None:
            await self.limiter.close()
        if self.purger is not None:
            await self.purger.stop()
        if self.key_upkeep is not None:
            await self.key_upkeep.stop()
        await self.db.close()

    def events_written(self) -> None:
        """A request of this process recorded an event: number and fan it out now."""
        if self.events is not None:
            self.events.poke()

    def warn_unavailable(self, exc: Exception) -> None:
        """Log database trouble at most once a second, not once per request: the cause (its
        SQLSTATE or SQLite code, when it has one), and how many 503s the last line stood for."""
        more = self._database_trouble.due()
        if more is None:
            return
        cause = exc.__cause__ or exc
        code = getattr(cause, "sqlstate", None) or getattr(cause, "sqlite_errorname", None)
        log.warning(
            "database unavailable: %s%s: %s%s",
            type(cause).__name__,
            f" ({code})" if code else "",
            cause,
            f" (and {more} more 503s since the last such line)" if more else "",
        )
