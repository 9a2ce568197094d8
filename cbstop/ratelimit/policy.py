"""Limits as the settings give them (`100/60`, `off`) and the fields that tell clients.

The fields follow draft-ietf-httpapi-ratelimit-headers-10: `RateLimit-Policy` names the
policy and gives its quota `q` and window `w` (seconds); `RateLimit` gives, after this
request, the quota units left `r` and `t`, the seconds until `r` is back to `q`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MICROSECONDS = 1_000_000
MAX_WINDOW = 31_622_400  # seconds: 366 days


@dataclass(frozen=True, slots=True)
class Limit:
    """`quota` requests per `window` seconds, spent at once or returning one at a time."""

    quota: int
    window: int

    @property
    def window_us(self) -> int:
        return self.window * MICROSECONDS

    @property
    def interval_us(self) -> int:
        """Microseconds for one unit to return (rounded down: never slower than promised)."""
        return self.window_us // self.quota

    @property
    def burst_us(self) -> int:
        """How far past now a key's TAT may run: `quota` intervals. Not the window: with the
        interval rounded down, a window the quota does not divide would let more than the
        quota through at once (9999/7 would admit 10,000)."""
        return self.quota * self.interval_us

    def __str__(self) -> str:
        return f"{self.quota}/{self.window}"


def parse_limit(text: str) -> Limit | None:
    """`<quota>/<window seconds>` as a `Limit`, `off` as None; anything else is ValueError."""
    given = text.strip().lower()
    if given == "off":
        return None
    quota, slash, window = given.partition("/")
    if not (
        slash and quota.isascii() and quota.isdigit() and window.isascii() and window.isdigit()
    ):
        raise ValueError(
            f"expected '<requests>/<seconds>' such as '100/60', or 'off'; got {text!r}"
        )
    limit = Limit(int(quota), int(window))
    if limit.quota < 1 or limit.window < 1:
        raise ValueError(f"requests and seconds must both be at least 1; got {text!r}")
    if limit.quota > limit.window_us:
        raise ValueError(f"at most one request per microsecond; got {text!r}")
    if limit.window > MAX_WINDOW:
        # Times stay exact in Redis's Lua (doubles, exact below 2^53 µs) with a window of this.
        raise ValueError(f"a window of at most {MAX_WINDOW} seconds (about a year); got {text!r}")
    return limit


@dataclass(frozen=True, slots=True)
class Decision:
    """What one request's check found: admitted or not, and what the fields say.

    `remaining` is `r`; `reset_us` the microseconds until the quota is whole again (`t`);
    `retry_us` (refused only) the microseconds until a retry can succeed.
    """

    allowed: bool
    remaining: int
    reset_us: int
    retry_us: int = 0

    @property
    def reset(self) -> int:
        """`t`: whole seconds, rounded up."""
        return math.ceil(self.reset_us / MICROSECONDS)

    @property
    def retry_after(self) -> int:
        """`Retry-After`: whole seconds, rounded up, at least 1 (no earlier than success)."""
        return max(1, math.ceil(self.retry_us / MICROSECONDS))


@dataclass(frozen=True, slots=True)
class Policy:
    """A named limit and its `RateLimit-Policy` field, made once."""

    name: str
    limit: Limit

    @property
    def policy_field(self) -> str:
        return f'"{self.name}";q={self.limit.quota};w={self.limit.window}'

    def fields(self, decision: Decision) -> list[tuple[bytes, bytes]]:
        """`RateLimit-Policy` and `RateLimit` for an answer this decision was made for."""
        return [
            (b"ratelimit-policy", self.policy_field.encode()),
            (
                b"ratelimit",
                f'"{self.name}";r={decision.remaining};t={decision.reset}'.encode(),
            ),
        ]


QUOTA = "default"
AUTH_FAILURES = "auth-failures"
