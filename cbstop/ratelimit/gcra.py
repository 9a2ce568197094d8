"""GCRA, the generic cell rate algorithm, on whole microseconds.

A key's whole state is one number, its theoretical arrival time (TAT): when its quota would
be whole again. A full quota (TAT in the past) may be spent at once; each request moves the
TAT one interval (`window / quota`) later, and a request is refused if that would put the TAT
more than `quota` intervals (one window, or a hair less where the quota does not divide it)
ahead of now. So `quota` requests pass at once, then one per interval.

`redis_store.py`'s Lua script is this function, line for line, on Redis's clock.
"""

from __future__ import annotations

from cbstop.ratelimit.policy import Decision, Limit


def step(tat: int, now: int, limit: Limit, *, consume: bool = True) -> tuple[Decision, int]:
    """The decision for one request at `now` on a key whose TAT is `tat`, and the new TAT.

    With `consume` false nothing is spent: the decision says whether a request would pass,
    and the TAT comes back unchanged (refusals never change it either).
    """
    burst, interval = limit.burst_us, limit.interval_us
    tat = max(tat, now)
    new = tat + interval
    if new - now > burst:
        return Decision(False, 0, tat - now, new - now - burst), tat
    remaining = (burst - (new - now)) // interval
    if not consume:
        return Decision(True, remaining + 1, tat - now), tat
    return Decision(True, remaining, new - now), new
