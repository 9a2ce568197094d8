"""What authentication leaves to be written, and the background task that writes it.

Two things change on use, and neither may make a request wait (CONTRACT 3.6): a key found
under an older secret is re-hashed with the newest, and each key's last use is kept to the
minute. Requests only note them in this process's memory. Re-hashes are written as soon as
the writer wakes (a rotation moves keys within a moment of their first use); last uses every
`key_last_used_interval` seconds and once more at shutdown. A write that fails is not fatal:
a lost re-hash is found again on the key's next use (it is still stored under the old hash),
and lost last uses are kept and written on the next round.
"""

from __future__ import annotations

import asyncio
import contextlib

from cbstop.auth import repository
from cbstop.auth.repository import Rehash
from cbstop.db.database import Database
from cbstop.errors import ServiceUnavailable
from cbstop.observability.logging import log

MINUTE = 60_000_000  # microseconds
# Keys whose minute of last use a process remembers at most; past it, it starts again (the
# cost is one extra write per key, not a wrong time).
REMEMBERED = 100_000


# Seconds a write waits for SQLite's write lock (held by a `cbstop load`, say): it is tried
# again next round anyway, and a stopping process should not wait the full 10 s for it.
LOCK_WAIT = 1.0


def minute_of(micros: int) -> int:
    """The start of the minute `micros` (microseconds since the epoch) falls in."""
    return micros - micros % MINUTE


class KeyUpkeep:
    """One process's pending key writes and the task that writes them."""

    def __init__(self, db: Database, interval: float) -> None:
        self._db = db
        self._interval = interval
        self._rehashes: dict[str, Rehash] = {}
        self._seen: dict[str, int] = {}  # key id -> minute of last use this process noted
        self._unwritten: dict[str, int] = {}  # the same, not written yet
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.rehashed = 0  # keys this process moved to the newest secret (for tests and logs)

    def used(self, key_id: str, now: int) -> None:
        """Note a successful use of the key at `now` (microseconds since the epoch)."""
        minute = minute_of(now)
        if self._seen.get(key_id) == minute:
            return
        if len(self._seen) >= REMEMBERED:
            self._seen.clear()
        self._seen[key_id] = minute
        self._unwritten[key_id] = minute

    def rehash(self, change: Rehash) -> None:
        """Queue moving a key to the newest secret's hash; the writer wakes for it."""
        self._rehashes[change.key_id] = change
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="cbstop-key-upkeep")

    async def stop(self) -> None:
        """Let the task finish what it is writing, then write what is still pending, once."""
        task, self._task = self._task, None
        self._stopping = True
        self._wake.set()
        if task is not None:
            # Not cancelled: a write cut short would lose the last uses it had taken. Its wait
            # is bounded by the database's own timeouts.
            await task
        await self._write_rehashes()
        await self._write_last_uses()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_round = loop.time() + self._interval
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_round - loop.time()))
            self._wake.clear()
            if self._stopping:
                return
            await self._write_rehashes()
            if loop.time() >= next_round:
                await self._write_last_uses()
                next_round = loop.time() + self._interval

    async def _write_rehashes(self) -> None:
        changes, self._rehashes = list(self._rehashes.values()), {}
        if not changes:
            return
        # Dropped on failure: each key is still under its old hash, so its next use queues it
        # again.
        if await self._write("re-hashing keys with the newest secret", changes, None):
            self.rehashed += len(changes)
            log.info("re-hashed %d keys with the newest key secret", len(changes))

    async def _write_last_uses(self) -> None:
        pending, self._unwritten = self._unwritten, {}
        if not pending:
            return
        if not await self._write("recording keys' last use", None, list(pending.items())):
            for key_id, minute in pending.items():  # kept for the next round
                self._unwritten[key_id] = max(minute, self._unwritten.get(key_id, 0))

    async def _write(
        self, what: str, rehashes: list[Rehash] | None, last_uses: list[tuple[str, int]] | None
    ) -> bool:
        try:
            async with self._db.transaction(write=True, lock_wait=LOCK_WAIT) as conn:
                if rehashes:
                    await repository.rehash_keys(conn, rehashes)
                if last_uses:
                    await repository.record_last_use(conn, last_uses)
        except ServiceUnavailable:
            return False  # the database's trouble is logged by the requests that meet it
        except Exception:
            log.exception("%s failed", what)
            return False
        return True
