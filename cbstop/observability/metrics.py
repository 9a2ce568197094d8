"""Prometheus metrics, kept in-process and rendered by `GET /metrics`.

Requests by route template and status, a latency histogram by route template, and the
database pool's connections in use and requests waiting. No labels ever carry key material.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Counters and histograms for one process."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.buckets: dict[tuple[str, str], list[int]] = {}
        self.sums: dict[tuple[str, str], float] = defaultdict(float)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one finished request."""
        self.requests[method, route, status] += 1
        key = (method, route)
        counts = self.buckets.get(key)
        if counts is None:
            counts = self.buckets[key] = [0] * (len(BUCKETS) + 1)
        counts[bisect_left(BUCKETS, seconds)] += 1
        self.sums[key] += seconds

    def render(self, pool_in_use: int, pool_waiting: int) -> str:
        """The Prometheus text exposition."""
        lines = [
            "# HELP cbstop_requests_total Requests answered, by route template and status.",
            "# TYPE cbstop_requests_total counter",
        ]
        for (method, route, status), n in sorted(self.requests.items()):
            lines.append(
                f'cbstop_requests_total{{method="{method}",route="{route}",status="{status}"}} {n}'
            )
        lines += [
            "# HELP cbstop_request_duration_seconds Time to answer, by route template.",
            "# TYPE cbstop_request_duration_seconds histogram",
        ]
        for (method, route), counts in sorted(self.buckets.items()):
            labels = f'method="{method}",route="{route}"'
            cumulative = 0
            for bound, n in zip(BUCKETS, counts, strict=False):
                cumulative += n
                lines.append(
                    f'cbstop_request_duration_seconds_bucket{{{labels},le="{bound}"}} {cumulative}'
                )
            total = cumulative + counts[-1]
            lines.append(f'cbstop_request_duration_seconds_bucket{{{labels},le="+Inf"}} {total}')
            lines.append(
                f"cbstop_request_duration_seconds_sum{{{labels}}} {self.sums[method, route]:.6f}"
            )
            lines.append(f"cbstop_request_duration_seconds_count{{{labels}}} {total}")
        lines += [
            "# HELP cbstop_db_pool_in_use Database connections in use.",
            "# TYPE cbstop_db_pool_in_use gauge",
            f"cbstop_db_pool_in_use {pool_in_use}",
            "# HELP cbstop_db_pool_waiting Requests waiting for a database connection.",
            "# TYPE cbstop_db_pool_waiting gauge",
            f"cbstop_db_pool_waiting {pool_waiting}",
        ]
        return "\n".join(lines) + "\n"
