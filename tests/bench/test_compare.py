"""Comparing two builds (`bench.run --baseline`): the paired round order and the before/after
table, on synthetic numbers; nothing here is timed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import compare, report
from bench.report import BASELINE, BASELINE_SQLITE, CBSTOP, CBSTOP_SQLITE, PEER, Measurement
from bench.run import _args
from bench.wrk import WrkResult


def _m(size: int, server: str, scenario: str, *rps: float) -> Measurement:
    repeats = [
        WrkResult(int(r * 3), 3.0, r, 1.0, 2.0, 4.0, 1.0, 10.0, status_errors=0, socket_errors=0)
        for r in rps
    ]
    return Measurement(size, server, scenario, repeats)


def _kind(item: tuple[str, str]) -> tuple[str, str]:
    return item


def test_each_current_scenario_is_paired_with_its_baseline_twin() -> None:
    items = [
        (CBSTOP, "get_one"),
        (CBSTOP, "create"),
        (BASELINE, "get_one"),
        (BASELINE, "create"),
        (CBSTOP_SQLITE, "get_one"),
        (BASELINE_SQLITE, "get_one"),
        (PEER, "get_one"),
    ]
    assert compare.paired_units(items, _kind) == [
        [(CBSTOP, "get_one"), (BASELINE, "get_one")],
        [(CBSTOP, "create"), (BASELINE, "create")],
        [(CBSTOP_SQLITE, "get_one"), (BASELINE_SQLITE, "get_one")],
        [(PEER, "get_one")],
    ]


def test_pairs_rotate_with_the_round_and_swap_who_goes_first() -> None:
    units = [["a", "A"], ["b", "B"], ["peer"]]
    assert compare.round_order(units, 0) == ["a", "A", "b", "B", "peer"]
    assert compare.round_order(units, 1) == ["B", "b", "peer", "A", "a"]
    assert compare.round_order(units, 2) == ["peer", "a", "A", "b", "B"]


def test_without_a_baseline_the_order_is_the_plain_rotation() -> None:
    jobs = [(CBSTOP, "get_one"), (CBSTOP, "create"), (PEER, "get_one"), ("hello", "hello")]
    units = compare.paired_units(jobs, _kind)
    for round_ in range(6):
        shift = round_ % len(jobs)
        assert compare.round_order(units, round_) == jobs[shift:] + jobs[:shift]


def test_a_ratio_s_two_scenarios_run_back_to_back_and_swap_each_round() -> None:
    items = [
        (CBSTOP, "get_one"),
        (CBSTOP, "patch"),
        (CBSTOP, "patch_if_match"),
        (CBSTOP, "post_replay"),
        (CBSTOP_SQLITE, "patch"),  # no twin on SQLite: alone
        (PEER, "get_one"),
    ]
    units = compare.paired_units(items, _kind)
    assert units == [
        [(CBSTOP, "get_one"), (CBSTOP, "post_replay")],
        [(CBSTOP, "patch"), (CBSTOP, "patch_if_match")],
        [(CBSTOP_SQLITE, "patch")],
        [(PEER, "get_one")],
    ]
    assert compare.round_order(units, 1)[:3] == [
        (CBSTOP, "patch_if_match"),
        (CBSTOP, "patch"),
        (CBSTOP_SQLITE, "patch"),
    ]


def test_with_a_baseline_twins_keep_each_build_pair_together() -> None:
    items = [
        (CBSTOP, "create"),
        (CBSTOP, "post_keyed"),
        (BASELINE, "create"),
        (BASELINE, "post_keyed"),
    ]
    units = compare.paired_units(items, _kind)
    assert units == [
        [(CBSTOP, "create"), (BASELINE, "create"), (CBSTOP, "post_keyed"), (BASELINE, "post_keyed")]
    ]
    assert compare.round_order(units, 1) == [
        (BASELINE, "post_keyed"),
        (CBSTOP, "post_keyed"),
        (BASELINE, "create"),
        (CBSTOP, "create"),
    ]


def _measurements() -> list[Measurement]:
    return [
        _m(1000, CBSTOP, "get_one", 1000, 1100, 900),  # median 1000
        _m(1000, BASELINE, "get_one", 1000, 950, 1050),  # median 1000: ratio 1.0
        _m(1000, CBSTOP, "create", 380, 400, 420),  # median 400
        _m(1000, BASELINE, "create", 500, 400, 450),  # median 450: ratio 0.889, below
        _m(1000, CBSTOP, "patch", 950, 950, 950),
        _m(1000, BASELINE, "patch", 1000, 1000, 1000),  # exactly 0.95: not below
        _m(1000, CBSTOP_SQLITE, "get_one", 500, 500, 500),
        _m(1000, BASELINE_SQLITE, "get_one"),  # no rounds: no ratio
        _m(1000, PEER, "get_one", 100, 100, 100),  # no twin: no row
    ]


def _rows() -> dict[tuple[str, str], compare.Comparison]:
    return {(r.database, r.scenario): r for r in compare.compare(_measurements())}


def test_rows_pair_medians_and_mark_more_than_5_percent_below() -> None:
    rows = _rows()
    assert list(rows) == [
        ("postgresql", "get_one"),
        ("postgresql", "create"),
        ("postgresql", "patch"),
        ("sqlite", "get_one"),
    ]
    get = rows["postgresql", "get_one"]
    assert (get.baseline_rps, get.current_rps, get.ratio, get.below) == (1000, 1000, 1.0, False)
    create = rows["postgresql", "create"]
    assert (create.baseline_rps, create.current_rps) == (450, 400)
    assert create.ratio == 0.889 and create.below is True
    assert rows["postgresql", "patch"].ratio == 0.95
    assert rows["postgresql", "patch"].below is False
    sqlite = rows["sqlite", "get_one"]
    assert (sqlite.baseline_rps, sqlite.ratio, sqlite.below) == (None, None, None)


def test_every_round_is_kept_with_its_own_ratio() -> None:
    assert _rows()["postgresql", "create"].to_json()["rounds"] == [
        {"baseline": 500, "current": 380, "ratio": 0.76},
        {"baseline": 400, "current": 400, "ratio": 1.0},
        {"baseline": 450, "current": 420, "ratio": 0.933},
    ]


def _results() -> dict[str, Any]:
    measurements = _measurements()
    return {
        "meta": {"stamp": "2026-01-01-0000", "workers": 2, "repeats": 3, "smoke": False},
        "measurements": [m.to_json() for m in measurements],
        "ratios": [r.to_json() for r in report.compute_ratios(measurements)],
        "rss": [],
        "loads": [],
        "comparison": {
            "baseline": {"label": "before", "command": "/old/cbstop", "commit": "a9ec3ea"},
            "current": {"label": "current", "command": "cbstop", "commit": "27e599d"},
            "threshold": compare.THRESHOLD,
            "rows": [r.to_json() for r in compare.compare(measurements)],
        },
    }


def test_markdown_has_the_before_after_table_beside_the_others() -> None:
    results = _results()
    text = report.markdown(results)
    assert "## Before/after: current ÷ before" in text
    assert "| world | database | scenario | before req/s | current req/s |" in text
    assert (
        "| 1k | PostgreSQL | POST create | 450 | 400 | 0.889 "
        "| 500 / 380 (0.76); 400 / 400 (1.00); 450 / 420 (0.93) | **below 0.95** |"
    ) in text
    assert "| 1k | PostgreSQL | PATCH rename | 1,000 | 950 | 0.950 | " in text
    assert "| 1k | SQLite | GET one (org key) | — | 500 | — |  | — |" in text
    assert "commit `a9ec3ea`" in text
    # The existing tables are unchanged, the baseline's rows among the scenarios.
    without = report.markdown({k: v for k, v in results.items() if k != "comparison"})
    assert "Before/after" not in without
    assert text.startswith(without.split("\n## Worker RSS")[0])
    assert "| 1k | cbstop baseline build (PostgreSQL) | POST create | 450 |" in text


def test_plot_draws_the_baseline_beside_the_current_build(tmp_path: Path) -> None:
    path = tmp_path / "plot.png"
    report.plot(_results(), path)
    assert path.read_bytes().startswith(b"\x89PNG")


def test_an_empty_sqlite_size_list_means_no_sqlite(tmp_path: Path) -> None:
    assert _args(["--sqlite-sizes", ""]).sqlite_sizes == []
    smoke = _args(["--smoke", "--sqlite-sizes", "", "--output-dir", str(tmp_path)])
    assert smoke.sqlite_sizes == []


def test_the_baseline_command_is_split_like_a_shell_would() -> None:
    args = _args(["--baseline", "'/tmp/old venv/bin/cbstop' --flag", "--baseline-label", "b"])
    assert args.baseline_command == ["/tmp/old venv/bin/cbstop", "--flag"]
    assert args.baseline_label == "b"
    assert _args([]).baseline_command is None
