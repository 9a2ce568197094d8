"""The benchmark's rate-limit scenarios (issue 12): GET one on a twin server with the limits on,
in-process and in Redis, measured beside GET one with them off; the checks that the limits
were on and refused nothing; the ratio rows. Nothing is timed and no server is started (a fake
API stands in, as in test_jobs.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench import jobs, report
from bench.compare import paired_units, round_order
from bench.jobs import LIMITED, QUOTA_POLICY, Job, build_jobs, metric_total, probe
from bench.procs import BenchError
from bench.report import (
    BASELINE,
    CBSTOP,
    CBSTOP_LIMITS,
    CBSTOP_REDIS,
    CBSTOP_SQLITE,
    CBSTOP_SQLITE_LIMITS,
    CBSTOP_SQLITE_REDIS,
    GET_LIMITS,
    GET_REDIS,
    Measurement,
)
from bench.run import limits_env, parse_size, server_env
from bench.wrk import WrkResult
from tests.bench.support import run_args, servers, world

ALL = (
    CBSTOP,
    CBSTOP_SQLITE,
    CBSTOP_LIMITS,
    CBSTOP_REDIS,
    CBSTOP_SQLITE_LIMITS,
    CBSTOP_SQLITE_REDIS,
)


def _jobs(
    tmp_path: Path, *kinds: str, seen: bool = True, **over: Any
) -> dict[tuple[str, str], Job]:
    """The jobs of `kinds`; Redis "sees" the Redis scenario's probe if `seen`."""

    def redis_sees(request: Callable[[], object]) -> bool:
        request()
        return seen

    built = build_jobs(
        servers(tmp_path, *kinds), world(), tmp_path, run_args(**over), redis_sees=redis_sees
    )
    return {(job.server_kind, job.scenario): job for job in built}


def _result(status_errors: int = 0, socket_errors: int = 0) -> WrkResult:
    return WrkResult(1000, 1.0, 1000.0, 1.0, 2.0, 4.0, 1.0, 9.0, status_errors, socket_errors)


class LimitedApi:
    """GET one as a server with (or without) the limits on answers it, and its /metrics."""

    def __init__(self, policy: str | None = QUOTA_POLICY, metrics: str = "") -> None:
        self.policy, self.metrics = policy, metrics

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/metrics":
            return httpx.Response(200, text=self.metrics)
        headers = {"ratelimit-policy": self.policy} if self.policy else {}
        return httpx.Response(200, json={"id": "x"}, headers=headers)


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> LimitedApi:
    fake = LimitedApi()
    monkeypatch.setattr(
        jobs, "client_for_checks", lambda: httpx.Client(transport=httpx.MockTransport(fake))
    )
    return fake


def test_limits_scenarios_run_on_their_twin_servers_measured_as_the_plain_one(
    tmp_path: Path,
) -> None:
    built = _jobs(tmp_path, *ALL)
    for kind, twins in LIMITED.items():
        plain = built[(kind, "get_one")]
        for scenario, limited in twins.items():
            job = built[(kind, scenario)]
            assert job.server.name == limited and job.measurement.server == kind
            assert (job.script, job.args) == (plain.script, plain.args)
            assert job.probe is not None and job.probe.policy == QUOTA_POLICY
            assert job.check is not None
    assert plain.probe is not None and plain.probe.policy is None  # limits off
    # Without the twin servers (a run without those scenarios) there is no such job.
    assert not {s for _, s in _jobs(tmp_path, CBSTOP, CBSTOP_SQLITE)} & {GET_LIMITS, GET_REDIS}
    # Nor for a baseline build, which has no twin.
    assert {s for k, s in _jobs(tmp_path, BASELINE, *ALL) if k == BASELINE}.isdisjoint(
        {GET_LIMITS, GET_REDIS}
    )


def test_scenarios_filter_keeps_the_limits_scenarios_it_names(tmp_path: Path) -> None:
    built = _jobs(tmp_path, *ALL, only={"get_one", GET_REDIS})
    assert sorted(built) == sorted(
        [(CBSTOP, "get_one"), (CBSTOP, GET_REDIS), (CBSTOP_SQLITE, "get_one"),
         (CBSTOP_SQLITE, GET_REDIS)]
    )  # fmt: skip


def test_the_redis_scenario_needs_a_way_to_watch_redis(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="get_one_redis needs redis_sees"):
        build_jobs(servers(tmp_path, CBSTOP, CBSTOP_REDIS), world(), tmp_path, run_args())


def test_they_run_back_to_back_with_get_one_in_every_round(tmp_path: Path) -> None:
    built = list(_jobs(tmp_path, CBSTOP, CBSTOP_LIMITS, CBSTOP_REDIS).values())
    units = paired_units(built, key=lambda job: (job.server_kind, job.scenario))
    unit = next(u for u in units if u[0].scenario == "get_one")
    # Issue 13's events pages are measured against GET one too, in the same unit.
    events = ["events_page", "events_page_admin"]
    assert [job.scenario for job in unit] == [
        "get_one",
        "post_replay",
        *events,
        GET_LIMITS,
        GET_REDIS,
    ]
    odd = [job.scenario for job in round_order([unit], 1)]
    assert odd == [GET_REDIS, GET_LIMITS, *events[::-1], "post_replay", "get_one"]


def test_bench_servers_run_without_limits_and_the_twins_with_them() -> None:
    plain = server_env()
    assert (plain["CBSTOP_RATE_LIMIT"], plain["CBSTOP_AUTH_FAILURE_LIMIT"]) == ("off", "off")
    in_process = server_env(**limits_env())
    assert in_process["CBSTOP_RATE_LIMIT"] == "60000000/60"
    assert in_process["CBSTOP_AUTH_FAILURE_LIMIT"] == "20/60"
    assert "CBSTOP_REDIS_URL" not in in_process
    redis = limits_env("redis://127.0.0.1:6379/0", "cbstop-bench-1-1000")
    assert redis["CBSTOP_REDIS_URL"] == "redis://127.0.0.1:6379/0"
    assert redis["CBSTOP_REDIS_PREFIX"] == "cbstop-bench-1-1000"
    assert parse_size("1k") == 1000


def test_the_quota_is_one_the_settings_accept_and_the_policy_it_announces() -> None:
    from cbstop.ratelimit.policy import parse_limit

    quota = parse_limit(limits_env()["CBSTOP_RATE_LIMIT"])
    assert quota is not None
    assert f'"default";q={quota.quota};w={quota.window}' == QUOTA_POLICY


def test_checks_pass_when_the_limits_are_on_and_refused_nothing(
    tmp_path: Path, api: LimitedApi
) -> None:
    api.metrics = (
        'cbstop_rate_limited_created{policy="default"} 1.7e9\n'
        "cbstop_rate_limit_unavailable_total 0.0\n"
    )
    built = _jobs(tmp_path, *ALL, only={GET_LIMITS, GET_REDIS})
    assert len(probe(list(built.values()))) == 4
    for job in built.values():
        assert job.check is not None
        with jobs.client_for_checks() as client:
            job.check(client, job, _result())


def test_a_server_with_the_limits_off_fails_the_probe(tmp_path: Path, api: LimitedApi) -> None:
    api.policy = None
    job = _jobs(tmp_path, *ALL, only={GET_LIMITS})[(CBSTOP, GET_LIMITS)]
    with pytest.raises(BenchError, match="RateLimit-Policy is None, expected"):
        probe([job])


def test_a_plain_server_with_the_limits_on_fails_the_probe(tmp_path: Path, api: LimitedApi) -> None:
    job = _jobs(tmp_path, CBSTOP, only={"get_one"})[(CBSTOP, "get_one")]
    with pytest.raises(BenchError, match="expected None \\(rate limits off\\)"):
        probe([job])


@pytest.mark.parametrize(
    ("scenario", "metrics", "result", "seen", "said"),
    [
        (GET_LIMITS, "", _result(status_errors=3), True, "3 answers were not 2xx"),
        (GET_LIMITS, "", _result(socket_errors=2), True, "and 2 failed"),
        (
            GET_LIMITS,
            'cbstop_rate_limited_total{policy="default"} 2.0\n',
            None,
            True,
            "cbstop_rate_limited_total is 2, expected 0",
        ),
        (
            GET_REDIS,
            "cbstop_rate_limit_unavailable_total 5.0\n",
            _result(),
            True,
            "5 requests were served without Redis",
        ),
        (GET_REDIS, "", None, False, "a request sent no command under the run's prefix"),
    ],
)
def test_a_refusal_or_a_limiter_that_was_not_there_fails_the_run(
    tmp_path: Path,
    api: LimitedApi,
    scenario: str,
    metrics: str,
    result: WrkResult | None,
    seen: bool,
    said: str,
) -> None:
    api.metrics = metrics
    job = _jobs(tmp_path, *ALL, seen=seen, only={scenario})[(CBSTOP, scenario)]
    assert job.check is not None
    with jobs.client_for_checks() as client, pytest.raises(BenchError, match=said):
        job.check(client, job, result)


def test_metric_totals_sum_every_label_set_and_nothing_else() -> None:
    text = (
        "# TYPE cbstop_rate_limited_total counter\n"
        'cbstop_rate_limited_total{policy="default"} 2.0\n'
        'cbstop_rate_limited_total{policy="auth-failures"} 1.0\n'
        'cbstop_rate_limited_created{policy="default"} 1.7e9\n'
        "cbstop_rate_limited_totally 9.0\n"
    )
    assert metric_total(text, "cbstop_rate_limited_total") == 3.0
    assert metric_total(text, "cbstop_requests_shed_total") == 0.0


def _m(server: str, scenario: str, *rps: float) -> Measurement:
    return Measurement(1000, server, scenario, [_result_rps(r) for r in rps])


def _result_rps(rps: float) -> WrkResult:
    return WrkResult(int(rps), 1.0, rps, 1.0, 2.0, 4.0, 1.0, 9.0, 0, 0)


def test_ratio_rows_hold_the_issue_s_targets_on_each_database() -> None:
    measurements = [
        _m(CBSTOP, "get_one", 1000, 1000, 1000),
        _m(CBSTOP, GET_LIMITS, 950, 900, 880),
        _m(CBSTOP, GET_REDIS, 700, 820, 800),
        _m(CBSTOP_SQLITE, "get_one", 500),
        _m(CBSTOP_SQLITE, GET_LIMITS, 440),
    ]
    ratios = {r.name: r for r in report.compute_ratios(measurements)}
    local = ratios["GET one limits in-process / limits off @1k"]
    assert (local.numerator, local.denominator) == (
        "cbstop get_one_limits @1k",
        "cbstop get_one @1k",
    )
    assert (local.value, local.target, local.reached) == (0.9, 0.9, True)
    assert local.rounds == (0.95, 0.9, 0.88)
    redis = ratios["GET one limits in Redis / limits off @1k"]
    assert (redis.value, redis.target, redis.reached) == (0.8, 0.8, True)
    sqlite = ratios["GET one limits in-process / limits off (SQLite) @1k"]
    assert (sqlite.value, sqlite.target, sqlite.reached) == (0.88, 0.9, False)
    missing = ratios["GET one limits in Redis / limits off (SQLite) @1k"]
    assert (missing.value, missing.reached) == (None, None)
    text = report.markdown(
        {"meta": {}, "measurements": [m.to_json() for m in measurements],
         "ratios": [r.to_json() for r in ratios.values()]}
    )  # fmt: skip
    assert "| GET one, rate limits on in-process (quota never reached) | 900 |" in text
    assert "| GET one limits in Redis / limits off @1k | cbstop get_one_redis @1k" in text
