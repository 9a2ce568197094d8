"""Each process's background work on events: number and fan out, purge past the retention.

A write in this process wakes the pump at once (`poke`); events written by other processes
and instances are found by polling every `CBSTOP_EVENT_POLL_INTERVAL`. Under a steady stream
of writes the pump runs at most every `MIN_GAP` seconds, so each run numbers a batch rather
than one event, and the pump's own round trips stay a small share of the write path's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from cbstop.db.database import Database
from cbstop.events import retention
from cbstop.events.sequencer import sequence
from cbstop.idempotency.keys import now_micros
from cbstop.observability.logging import Throttle, log
from cbstop.tasks import cancelled, guarded

MIN_GAP = 0.01  # seconds between two runs, however often writes wake it

MICROS_PER_DAY = 86_400_000_000


class EventPump:
    """Numbers events in commit order and fans them out to webhooks (`sequencer.sequence`),
    and purges those past the retention, in the background; `on_deliveries` is called when a
    run made deliveries to attempt."""

    def __init__(
        self,
        db: Database,
        *,
        poll_interval: float,
        retention_days: float,
        purge_interval: float,
        on_deliveries: Callable[[], None] = lambda: None,
    ) -> None:
        self._db = db
        self._poll_interval = poll_interval
        self._retention = int(retention_days * MICROS_PER_DAY)
        self._purge_interval = purge_interval
        self._on_deliveries = on_deliveries
        self._poked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._trouble = Throttle(10.0)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="cbstop-events")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancelled(task)

    def poke(self) -> None:
        """A write of this process recorded an event: number it now, not at the next poll."""
        self._poked.set()

    async def _run(self) -> None:
        next_purge = time.monotonic() + min(self._purge_interval, 60.0)
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the task's
            # cancellation when the wait ends at the same moment (a poke), and stop() hangs.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._poked.wait()
            self._poked.clear()
            await self._sequence()
            if time.monotonic() >= next_purge:
                next_purge = time.monotonic() + self._purge_interval
                await self._purge()
            await asyncio.sleep(MIN_GAP)

    async def _sequence(self) -> None:
        numbering = sequence(self._db, now_micros())
        progress = await guarded(self._trouble, "numbering events", numbering)
        if progress is None:
            return
        if progress.deliveries:
            self._on_deliveries()
        if progress.contended:
            self._poked.set()  # another process's run may have missed this one's events

    async def _purge(self) -> None:
        cutoff = now_micros() - self._retention
        gone = await guarded(self._trouble, "purging events", retention.purge(self._db, cutoff))
        if gone and any(gone.values()):
            log.info(
                "purged %d events, %d webhook deliveries and %d attempts past the retention",
                gone["events"],
                gone["webhook_deliveries"],
                gone["webhook_attempts"],
            )
