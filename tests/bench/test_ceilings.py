"""Issue 14's report: each scenario as a fraction of its ceiling (bare get, bare write), the
keyed writes against GET one, the p99 targets; and the scenarios that feed them (bare write's
create, patch_keyed, the keyed writes on SQLite). Synthetic numbers and unstarted servers:
nothing here is timed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import ceilings, report
from bench.compare import paired_units
from bench.jobs import build_jobs
from bench.report import (
    BARE_GET,
    BARE_WRITE,
    BASELINE,
    BASELINE_SQLITE,
    CBSTOP,
    CBSTOP_SQLITE,
    HELLO,
    Measurement,
)
from bench.wrk import WrkResult
from tests.bench.support import run_args, servers, world


def _m(size: int, server: str, scenario: str, rps: float, p99: float = 10.0) -> Measurement:
    """One repeat of `rps` req/s whose p99 is `p99` ms."""
    result = WrkResult(int(rps * 5), 5.0, rps, p99 / 4, p99 / 2, p99, p99 / 4, p99 * 2, 0, 0)
    return Measurement(size, server, scenario, [result])


def _world_of_numbers() -> list[Measurement]:
    return [
        _m(1000, CBSTOP, "get_one", 1000),
        _m(1000, BARE_GET, "get_one", 1250),  # GET one 0.8 of it: under 0.85
        _m(1000, CBSTOP, "list_admin", 600),
        _m(1000, CBSTOP, "create", 400),
        _m(1000, BARE_WRITE, "create", 800),
        _m(1000, CBSTOP, "post_keyed", 600),  # exactly 0.6 x GET one: reached
        _m(1000, CBSTOP, "patch", 850),
        _m(1000, CBSTOP, "patch_keyed", 790),  # 0.79 x GET one: under 0.8
        _m(1000, CBSTOP_SQLITE, "get_one", 2000),
        _m(1000, CBSTOP_SQLITE, "post_keyed", 600, p99=49.9),  # 0.3 x GET one; p99 under 50
        _m(1000, CBSTOP_SQLITE, "patch_keyed", 500),
        _m(1000, HELLO, "hello", 20_000),
        # A second size without the references (--no-refs): no ceilings there.
        _m(100_000, CBSTOP, "get_one", 900),
        _m(100_000, CBSTOP, "create", 300),
        _m(100_000, CBSTOP_SQLITE, "get_one", 1000),
        _m(100_000, CBSTOP_SQLITE, "post_keyed", 200, p99=50.0),  # not under 50
    ]


def _ratios() -> dict[str, report.Ratio]:
    return {r.name: r for r in report.compute_ratios(_world_of_numbers())}


def test_get_one_must_reach_0_85_of_bare_get_on_cbstop_s_pool() -> None:
    ratio = _ratios()["GET one / bare get @1k"]
    assert (ratio.numerator, ratio.denominator) == ("cbstop get_one @1k", "bare-get get_one @1k")
    assert (ratio.value, ratio.target, ratio.reached) == (0.8, 0.85, False)


def test_keyed_writes_are_held_to_get_one_on_each_database() -> None:
    ratios = _ratios()
    post = ratios["POST keyed / GET one @1k"]
    assert (post.numerator, post.denominator) == ("cbstop post_keyed @1k", "cbstop get_one @1k")
    assert (post.value, post.target, post.reached) == (0.6, 0.6, True)
    patch = ratios["PATCH keyed / GET one @1k"]
    assert (patch.value, patch.target, patch.reached) == (0.79, 0.8, False)
    lite = ratios["POST keyed / GET one (SQLite) @1k"]
    assert lite.numerator == "cbstop-sqlite post_keyed @1k"
    assert lite.denominator == "cbstop-sqlite get_one @1k"
    assert (lite.value, lite.target, lite.reached) == (0.3, 0.3, True)
    assert ratios["POST keyed / GET one (SQLite) @100k"].reached is False  # 0.2
    # SQLite's keyed PATCH has no bar of its own: information.
    info = ratios["PATCH keyed / GET one (SQLite) @1k"]
    assert (info.value, info.target, info.reached) == (0.25, None, None)
    # The keyed PATCH's own cost, beside the plain one it runs back to back with.
    assert ratios["PATCH keyed / PATCH @1k"].value == 0.929
    assert report.SCENARIO_TWINS["patch_keyed"] == "patch"


def test_each_postgresql_scenario_is_divided_by_its_ceiling() -> None:
    rows = {(c.size, c.scenario): c for c in ceilings.compute_ceilings(_world_of_numbers())}
    # Only the size where the references ran; only cbstop on PostgreSQL.
    assert list(rows) == [
        (1000, "get_one"),
        (1000, "list_admin"),
        (1000, "create"),
        (1000, "post_keyed"),
        (1000, "patch"),
        (1000, "patch_keyed"),
    ]
    get = rows[1000, "get_one"]
    assert (get.ceiling, get.ceiling_rps, get.fraction, get.target, get.reached) == (
        BARE_GET,
        1250,
        0.8,
        0.85,
        False,
    )
    create = rows[1000, "create"]
    assert (create.ceiling, create.ceiling_rps, create.fraction) == (BARE_WRITE, 800, 0.5)
    assert (create.target, create.reached) == (None, None)
    assert rows[1000, "post_keyed"].ceiling == BARE_WRITE
    assert rows[1000, "post_keyed"].fraction == 0.75
    for scenario in ("list_admin", "patch", "patch_keyed"):
        assert rows[1000, scenario].ceiling == BARE_GET
        assert rows[1000, scenario].target is None
    assert create.to_json() == {
        "size": 1000,
        "scenario": "create",
        "rps": 400,
        "ceiling": BARE_WRITE,
        "ceiling_rps": 800,
        "fraction": 0.5,
        "target": None,
        "reached": None,
    }


def test_without_references_there_is_no_ceiling_row() -> None:
    no_refs = [m for m in _world_of_numbers() if m.server not in (BARE_GET, BARE_WRITE)]
    assert ceilings.compute_ceilings(no_refs) == []


def test_sqlite_keyed_post_p99_must_stay_under_50_ms() -> None:
    rows = {t.name: t for t in ceilings.compute_latency_targets(_world_of_numbers())}
    assert list(rows) == ["POST keyed p99 (SQLite) @1k", "POST keyed p99 (SQLite) @100k"]
    small = rows["POST keyed p99 (SQLite) @1k"]
    assert (small.measured, small.p99_ms, small.bound_ms, small.strict) == (
        "cbstop-sqlite post_keyed @1k",
        49.9,
        50.0,
        True,
    )
    assert small.reached is True
    assert rows["POST keyed p99 (SQLite) @100k"].reached is False  # 50.0 is not under 50


def _with_baseline() -> list[Measurement]:
    return [
        _m(1000, CBSTOP, "get_one", 1000, p99=20.0),
        _m(1000, BASELINE, "get_one", 1000, p99=20.0),  # equal: no worse
        _m(1000, CBSTOP, "create", 400, p99=30.5),
        _m(1000, BASELINE, "create", 400, p99=30.0),  # worse
        _m(1000, CBSTOP, "post_keyed", 400),  # the baseline did not run it: no row
        _m(1000, CBSTOP_SQLITE, "create", 300, p99=40.0),
        _m(1000, BASELINE_SQLITE, "create", 200, p99=80.0),
        _m(1000, CBSTOP_SQLITE, "post_keyed", 300, p99=45.0),
    ]


def test_p99_of_each_scenario_no_worse_than_the_baseline_build() -> None:
    rows = {t.name: t for t in ceilings.compute_latency_targets(_with_baseline())}
    assert set(rows) == {
        "POST keyed p99 (SQLite) @1k",
        "get_one p99 no worse than the baseline build @1k",
        "create p99 no worse than the baseline build @1k",
        "create p99 no worse than the baseline build (SQLite) @1k",
    }
    same = rows["get_one p99 no worse than the baseline build @1k"]
    assert (same.p99_ms, same.bound_ms, same.strict, same.reached) == (20.0, 20.0, False, True)
    worse = rows["create p99 no worse than the baseline build @1k"]
    assert (worse.measured, worse.bound) == ("cbstop create @1k", "baseline create @1k")
    assert (worse.p99_ms, worse.bound_ms, worse.reached) == (30.5, 30.0, False)
    lite = rows["create p99 no worse than the baseline build (SQLite) @1k"]
    assert (lite.p99_ms, lite.bound_ms, lite.reached) == (40.0, 80.0, True)
    assert lite.to_json()["bound"] == "baseline-sqlite create @1k"


def _results(measurements: list[Measurement]) -> dict[str, Any]:
    return {
        "meta": {},
        "measurements": [m.to_json() for m in measurements],
        "ratios": [r.to_json() for r in report.compute_ratios(measurements)],
        "ceilings": [c.to_json() for c in ceilings.compute_ceilings(measurements)],
        "latency_targets": [t.to_json() for t in ceilings.compute_latency_targets(measurements)],
    }


def test_markdown_shows_each_scenario_beside_its_ceiling_and_the_p99_targets() -> None:
    before = _m(1000, BASELINE, "create", 400, p99=30.0)
    text = report.markdown(_results([*_world_of_numbers(), before]))
    assert "## Fraction of its ceiling" in text
    assert (
        "| 1k | GET one (org key) | 1,000 | bare get (ASGI + cbstop's pool) | 1,250 | 0.800 "
        "| ≥ 0.85 | **not reached** |"
    ) in text
    assert (
        "| 1k | POST create | 400 | bare write (ASGI + cbstop's pool and create statement) "
        "| 800 | 0.500 |  | — |"
    ) in text
    assert "| POST keyed / GET one (SQLite) @1k | cbstop-sqlite post_keyed @1k |" in text
    assert "## Latency targets (p99)" in text
    assert (
        "| POST keyed p99 (SQLite) @1k | cbstop-sqlite post_keyed @1k | 49.90 | < 50 ms "
        "| 50.00 | reached |"
    ) in text
    assert (
        "| create p99 no worse than the baseline build @1k | cbstop create @1k | 10.00 "
        "| ≤ baseline create @1k | 30.00 | reached |"
    ) in text


def test_an_older_results_file_renders_without_the_new_tables() -> None:
    results = _results(_world_of_numbers())
    del results["ceilings"], results["latency_targets"]
    text = report.markdown(results)
    assert "Fraction of its ceiling" not in text and "Latency targets" not in text


# --- the scenarios behind them -----------------------------------------------------------------


def test_bare_write_runs_create_with_cbstop_s_script_and_probe(tmp_path: Path) -> None:
    built = build_jobs(
        servers(tmp_path, CBSTOP, BARE_GET, BARE_WRITE), world(), tmp_path, run_args()
    )
    bare = [job for job in built if job.server_kind == BARE_WRITE]
    assert [job.scenario for job in bare] == ["create"]
    cbstop = next(j for j in built if (j.server_kind, j.scenario) == (CBSTOP, "create"))
    assert (bare[0].script, bare[0].args) == (cbstop.script, cbstop.args)
    assert bare[0].probe == cbstop.probe
    assert bare[0].probe is not None and bare[0].probe.status == 201
    # --scenarios create keeps it.
    only = build_jobs(
        servers(tmp_path, CBSTOP, BARE_WRITE), world(), tmp_path, run_args(only={"create"})
    )
    assert [(j.server_kind, j.scenario) for j in only] == [
        (CBSTOP, "create"),
        (BARE_WRITE, "create"),
    ]


def test_keyed_writes_run_on_both_databases_each_probe_with_a_fresh_key(tmp_path: Path) -> None:
    only = {"patch", "patch_keyed", "post_keyed", "create"}
    built = build_jobs(
        servers(tmp_path, CBSTOP, CBSTOP_SQLITE), world(), tmp_path, run_args(only=only)
    )
    by = {(job.server_kind, job.scenario): job for job in built}
    assert set(by) == {
        (CBSTOP, "create"),
        (CBSTOP, "post_keyed"),
        (CBSTOP, "patch"),
        (CBSTOP, "patch_keyed"),
        (CBSTOP_SQLITE, "create"),
        (CBSTOP_SQLITE, "post_keyed"),
        (CBSTOP_SQLITE, "patch_keyed"),
    }
    keys = set()
    for kind in (CBSTOP, CBSTOP_SQLITE):
        job = by[kind, "patch_keyed"]
        assert job.script == "patch_keyed.lua"
        assert job.args == by[CBSTOP, "patch"].args  # the same key and ids as patch
        probe = job.probe
        assert probe is not None
        assert (probe.method, probe.status, probe.replayed, probe.etag) == (
            "PATCH",
            200,
            False,
            True,
        )
        assert probe.path == by[CBSTOP, "patch"].probe_path
        keys.add(probe.headers["Idempotency-Key"])
    assert len(keys) == 2
    # patch_keyed runs back to back with patch in every round, patch_if_match's way.
    units = paired_units(built, key=lambda job: (job.server_kind, job.scenario))
    unit = next(u for u in units if (u[0].server_kind, u[0].scenario) == (CBSTOP, "patch"))
    assert [(j.server_kind, j.scenario) for j in unit] == [
        (CBSTOP, "patch"),
        (CBSTOP, "patch_keyed"),
    ]
