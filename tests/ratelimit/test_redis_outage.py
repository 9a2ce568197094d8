"""Redis down or slow under a real `cbstop serve` (CONTRACT 3.3): requests are served without
limits (no 5xx, no wait past the Redis timeout), `/metrics` counts them, a warning is logged at
most every 10 s, `/readyz` stays 200, and the limits return by themselves with Redis.

Each test has its own `redis-server`, which it kills or pauses (SIGSTOP) mid-traffic.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest

from cbstop.world.loader import load_world
from tests.integrations.helpers import secret, world
from tests.observability.helpers import messages, samples
from tests.ratelimit.conftest import RedisServer
from tests.reliability.processes import Server, envelope_code, running
from tests.support import TEST_KEY_SECRET

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("servers")]

ITEM = "/v1/integrations/int_a1_orders"
QUOTA = 5  # per 60 s: spent in the first second of traffic
OUTAGE = 3.0  # seconds Redis stays down or paused
RECOVERY = 10.0  # seconds within which limits must apply again once Redis is back
ANSWER_WITHIN = 2.0  # seconds: the bound on any answer while Redis is paused (timeout 0.25 s)
WARNING = "rate limits unavailable"


@dataclass(frozen=True)
class Answer:
    """One request as the client saw it."""

    started: float
    seconds: float
    status: int | None
    code: str | None
    limited_fields: bool  # RateLimit fields present: the limits were checked
    error: str | None = None


class Load:
    """`threads` clients sending GET one with one key, every answer recorded."""

    def __init__(self, url: str, key: str, threads: int = 2) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {key}"}
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=10.0) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    got = client.get(ITEM)
                    answer = Answer(
                        started,
                        time.monotonic() - started,
                        got.status_code,
                        envelope_code(got),
                        "ratelimit" in got.headers,
                    )
                except httpx.HTTPError as exc:
                    answer = Answer(
                        started, time.monotonic() - started, None, None, False, repr(exc)
                    )
                with self._lock:
                    self.answers.append(answer)
                time.sleep(0.01)

    def since(self, moment: float, until: float = float("inf")) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if moment <= a.started < until]

    def wait_for(self, status: int, since: float, timeout: float) -> float:
        """Seconds from `since` until an answer with `status` (AssertionError past timeout)."""
        deadline = since + timeout
        while time.monotonic() < deadline:
            seen = [a for a in self.since(since) if a.status == status]
            if seen:
                return seen[0].started - since
            time.sleep(0.05)
        tail = [(a.status, a.code) for a in self.since(since)][-5:]
        raise AssertionError(f"no {status} within {timeout}s of Redis being back: {tail}")


@contextmanager
def limited_server(database_url: str, redis: RedisServer) -> Iterator[tuple[Server, str]]:
    """A `cbstop serve` with both limits on, counting in `redis`; the matrix world loaded."""
    matrix = world("matrix")
    load_world(database_url, matrix, key_secret=TEST_KEY_SECRET)
    env = {
        "CBSTOP_REDIS_URL": redis.url,
        "CBSTOP_REDIS_PREFIX": "t" + uuid.uuid4().hex,
        "CBSTOP_REDIS_TIMEOUT": "0.25",
        "CBSTOP_RATE_LIMIT": f"{QUOTA}/60",
        "CBSTOP_AUTH_FAILURE_LIMIT": "20/60",
    }
    with running(database_url, env=env) as server:
        yield server, secret(matrix, "key_org_a1")


def unavailable_count(client: httpx.Client) -> float:
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    return sum(
        value
        for name, _, value in samples(metrics.text)
        if name == "cbstop_rate_limit_unavailable_total"
    )


def test_redis_killed_mid_traffic_serves_without_limits_and_limits_return_with_it(
    database_url: str, private_redis: RedisServer
) -> None:
    with (
        limited_server(database_url, private_redis) as (server, key),
        httpx.Client(base_url=server.url, timeout=5.0) as probe,
    ):
        with Load(server.url, key) as load:
            start = time.monotonic()
            load.wait_for(429, start, RECOVERY)  # the quota is spent: Redis counts
            assert unavailable_count(probe) == 0
            private_redis.kill()
            killed = time.monotonic()
            time.sleep(OUTAGE)
            readyz = probe.get("/readyz")
            unavailable = unavailable_count(probe)
            restarting = time.monotonic()
            private_redis.start()  # empty, on the same port
            back = time.monotonic()
            recovered = load.wait_for(429, back, RECOVERY)
            everything = load.since(start)
            outage = load.since(killed + 0.5, restarting)  # past any request in flight at the kill

        stderr = server.stderr

    bad = [a for a in everything if a.error is not None or a.status is None or a.status >= 500]
    assert bad == [], bad[:10]
    assert {(a.status, a.code) for a in everything} == {(200, None), (429, "RATE_LIMITED")}
    # Down: served, beyond the quota, without limits (and without their fields).
    assert len(outage) > QUOTA
    assert {(a.status, a.limited_fields) for a in outage} == {(200, False)}
    assert unavailable >= len(outage)
    assert readyz.status_code == 200
    # One warning per 10 s at most, naming the cause.
    warnings = [m for m in messages(stderr) if WARNING in m["message"]]
    assert len(warnings) == 1, warnings
    assert warnings[0]["level"] == "warning"
    assert "ConnectionError" in warnings[0]["message"]
    # Back: limits apply again (a fresh Redis, a fresh quota) without a restart of cbstop.
    assert recovered < RECOVERY
    print(f"\nlimits back {recovered:.2f}s after Redis; {len(outage)} requests served while down")


def test_a_paused_redis_delays_no_answer_past_its_timeout(
    database_url: str, private_redis: RedisServer
) -> None:
    with (
        limited_server(database_url, private_redis) as (server, key),
        httpx.Client(base_url=server.url, timeout=5.0) as probe,
    ):
        with Load(server.url, key, threads=4) as load:
            start = time.monotonic()
            time.sleep(0.5)
            private_redis.pause()
            paused = time.monotonic()
            try:
                time.sleep(OUTAGE)
                readyz = probe.get("/readyz")
            finally:
                private_redis.resume()
            resumed = time.monotonic()
            load.wait_for(429, resumed, RECOVERY)
            during = load.since(paused, resumed)
            everything = load.since(start)
        stderr = server.stderr

    bad = [a for a in everything if a.error is not None or a.status is None or a.status >= 500]
    assert bad == [], bad[:10]
    assert readyz.status_code == 200
    # Served without limits while paused: 200 with no fields; none waited long.
    served = [a for a in during if not a.limited_fields]
    assert len(served) > QUOTA
    assert {a.status for a in served} == {200}
    latencies = sorted(a.seconds for a in during)
    slowest = latencies[-1]
    p50 = latencies[len(latencies) // 2]
    waited = sum(1 for s in latencies if s > 0.2)
    print(
        f"\nwhile paused: {len(latencies)} answers, p50 {p50 * 1000:.1f} ms, "
        f"{waited} over 200 ms, slowest {slowest * 1000:.0f} ms"
    )
    assert slowest < ANSWER_WITHIN
    warnings = [m for m in messages(stderr) if WARNING in m["message"]]
    assert len(warnings) == 1 and "TimeoutError" in warnings[0]["message"], warnings
