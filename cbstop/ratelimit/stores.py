"""Where the limits' state lives: the interface both stores keep, and the in-process store.

A store knows two limits, either of which may be off: the quota (per owner per operation) and
the budget of failed authentications (per client address). It answers three questions:

- `blocked(address)`, before a key is looked up, without I/O: a refusal it already knows of.
  In process, that is exact; the Redis store answers from refusals it has seen lately.
  `refused(quota_key)` is the same for a quota.
- `admit(address, quota_key)`, once a key is known: refused if the address is past its budget
  (nothing spent), else one unit of the quota spent or refused.
- `fail(address)`, once a key is found wrong: refused if the address was already past its
  budget, else one unit of the budget spent.

`admit` and `fail` answer None when the store cannot be reached: the request is then served
without limits (CONTRACT 3.3, fail open).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from cbstop.ratelimit import gcra
from cbstop.ratelimit.policy import Decision, Limit

# Keys the in-process store keeps. When a new one would pass it, those whose quota is whole
# again are dropped (they mean nothing); if most are still live (a flood of distinct
# addresses), the oldest half go too, which forgives them.
MEMORY_KEYS = 100_000


@dataclass(frozen=True, slots=True)
class Admission:
    """`admit`'s answer: the address's refusal (nothing else checked), or the quota's decision."""

    address: Decision | None = None
    quota: Decision | None = None


class Store(Protocol):
    """The limits' state (see the module's docstring)."""

    # Whether a check asks another process (Redis): refusals it remembers are then worth
    # asking for first (`refused`).
    remote: bool

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def blocked(self, address: str) -> Decision | None: ...

    def refused(self, quota_key: str) -> Decision | None: ...

    async def admit(self, address: str | None, quota_key: str | None) -> Admission | None: ...

    async def fail(self, address: str) -> Decision | None: ...


def now_us() -> int:
    """The in-process clock, in whole microseconds (monotonic: never moved by NTP)."""
    return time.monotonic_ns() // 1000


class MemoryStore:
    """The limits of one process: exact for it, separate from every other worker's."""

    remote = False

    def __init__(self, quota: Limit | None, auth_failures: Limit | None) -> None:
        self.quota = quota
        self.auth_failures = auth_failures
        self._tats: dict[str, int] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def blocked(self, address: str) -> Decision | None:
        return self._peek("a:" + address, self.auth_failures)

    def refused(self, quota_key: str) -> Decision | None:
        return self._peek("q:" + quota_key, self.quota)

    def _peek(self, key: str, limit: Limit | None) -> Decision | None:
        tat = self._tats.get(key)
        if limit is None or tat is None:
            return None
        decision, _ = gcra.step(tat, now_us(), limit, consume=False)
        return None if decision.allowed else decision

    async def admit(self, address: str | None, quota_key: str | None) -> Admission | None:
        # Checked again: other requests' failures may have come in while the key was looked up.
        if address is not None:
            refusal = self.blocked(address)
            if refusal is not None:
                return Admission(address=refusal)
        if self.quota is None or quota_key is None:
            return Admission()
        return Admission(quota=self._spend("q:" + quota_key, self.quota))

    async def fail(self, address: str) -> Decision | None:
        if self.auth_failures is None:
            return None
        return self._spend("a:" + address, self.auth_failures)

    def _spend(self, key: str, limit: Limit) -> Decision:
        now = now_us()
        tats = self._tats
        decision, tat = gcra.step(tats.get(key, now), now, limit)
        if decision.allowed:
            if key not in tats and len(tats) >= MEMORY_KEYS:
                self._prune(now)
            tats[key] = tat
        return decision

    def _prune(self, now: int) -> None:
        tats = self._tats
        for key in [k for k, tat in tats.items() if tat <= now]:
            del tats[key]
        if len(tats) >= MEMORY_KEYS:
            for key in list(tats)[: len(tats) // 2]:
                del tats[key]
