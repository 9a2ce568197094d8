"""What the edge asks of the rate limits, in the contract's order (CONTRACT 3.3):

    check_address (before the key is looked up) → 429 auth-failures
    failed        (the key was wrong)            → 429 auth-failures, or the 401's fields
    admit         (the key is known)             → 429 default, or the answer's fields

A refusal is `RateLimited` with `Retry-After` and the refusing policy's fields. When the store
cannot be reached the request is served without limits and without fields; the metric
`cbstop_rate_limit_unavailable_total` counts such requests and a warning is logged at most
every `WARN_INTERVAL` seconds.
"""

from __future__ import annotations

from collections.abc import Callable

from cbstop.errors import RateLimited
from cbstop.observability.logging import Throttle, log
from cbstop.observability.metrics import Metrics
from cbstop.ratelimit.policy import AUTH_FAILURES, QUOTA, Decision, Policy, parse_limit
from cbstop.ratelimit.stores import MemoryStore, Store
from cbstop.settings import Settings

Fields = list[tuple[bytes, bytes]]
WARN_INTERVAL = 10.0


class RateLimiter:
    """The quota and the auth-failure budget of one process, over its store."""

    def __init__(
        self, settings: Settings, metrics: Metrics, busy: Callable[[], bool] = lambda: True
    ) -> None:
        quota = parse_limit(settings.rate_limit)
        auth_failures = parse_limit(settings.auth_failure_limit)
        self.quota = Policy(QUOTA, quota) if quota is not None else None
        self.auth_failures = Policy(AUTH_FAILURES, auth_failures) if auth_failures else None
        self.store: Store
        if settings.redis_url:
            from cbstop.ratelimit.redis_store import RedisStore

            self.store = RedisStore(settings, quota, auth_failures, busy)
        else:
            self.store = MemoryStore(quota, auth_failures)
        self.metrics = metrics
        self._trouble = Throttle(WARN_INTERVAL)

    @classmethod
    def of(
        cls, settings: Settings, metrics: Metrics, busy: Callable[[], bool] = lambda: True
    ) -> RateLimiter | None:
        """The limiter `settings` ask for, or None when both limits are off. `busy` says
        whether other requests are in flight (the Redis store then gathers checks)."""
        if (
            parse_limit(settings.rate_limit) is None
            and parse_limit(settings.auth_failure_limit) is None
        ):
            return None
        return cls(settings, metrics, busy)

    async def start(self) -> None:
        await self.store.start()

    async def close(self) -> None:
        await self.store.close()

    def check_address(self, address: str) -> None:
        """Before any key is looked up: 429 if the address is past its failure budget."""
        if self.auth_failures is not None:
            refusal = self.store.blocked(address)
            if refusal is not None:
                raise self._refused(self.auth_failures, refusal)

    async def failed(self, address: str) -> Fields:
        """A wrong key from `address`: 429 if it was already past its budget; else the fields
        for its 401, the failure counted."""
        if self.auth_failures is None:
            return []
        decision = await self.store.fail(address)
        if decision is None:
            self._unavailable()
            return []
        if not decision.allowed:
            raise self._refused(self.auth_failures, decision)
        return self.auth_failures.fields(decision)

    async def admit(self, owner: str, operation: str, address: str) -> Fields:
        """A known key: 429 if its address is past its failure budget or its owner's quota
        for `operation` is spent; else the quota's fields for the answer."""
        quota = self.quota
        address_key = address if self.auth_failures is not None else None
        quota_key = f"{owner}|{operation}" if quota is not None else None
        if address_key is None and quota_key is None:
            return []
        if quota_key is not None and quota is not None and self.store.remote:
            # Refused by Redis a moment ago: refused again without a round trip (exact, see
            # `RedisStore.refused`), so a client hammering past its quota costs next to nothing.
            refusal = self.store.refused(quota_key)
            if refusal is not None:
                raise self._refused(quota, refusal)
        admission = await self.store.admit(address_key, quota_key)
        if admission is None:
            self._unavailable()
            return []
        if admission.address is not None and self.auth_failures is not None:
            raise self._refused(self.auth_failures, admission.address)
        decision = admission.quota
        if decision is None or quota is None:
            return []
        if not decision.allowed:
            raise self._refused(quota, decision)
        return quota.fields(decision)

    def _refused(self, policy: Policy, decision: Decision) -> RateLimited:
        self.metrics.rate_limited(policy.name)
        headers = {"Retry-After": str(decision.retry_after)}
        headers.update((k.decode(), v.decode()) for k, v in policy.fields(decision))
        message = RateLimited.AUTH_FAILURES if policy.name == AUTH_FAILURES else None
        return RateLimited(message, headers)

    def _unavailable(self) -> None:
        """Count a request served without limits; warn at most every WARN_INTERVAL seconds."""
        self.metrics.rate_limit_unavailable()
        more = self._trouble.due()
        if more is None:
            return
        cause = getattr(self.store, "last_error", None)
        log.warning(
            "rate limits unavailable, requests served without them: %s%s",
            cause or "the store did not answer",
            f" (and {more} more such requests since the last such line)" if more else "",
        )
