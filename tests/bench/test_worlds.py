"""The benchmark's world generator and its results code; nothing here is timed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.report import BARE_GET, CBSTOP, CBSTOP_SQLITE, HELLO, PEER, Measurement
from bench.run import parse_sizes
from bench.worlds import (
    DESK_GROUP,
    DESK_ORGANISATIONS,
    KEY_ORG_ORGANISATION,
    generate_world,
    partner_organisations,
    write_world,
)
from bench.wrk import WrkResult, parse_report
from tests.support import TEST_KEY_SECRET, query


@pytest.mark.parametrize("n", [1000, 2500])
def test_world_has_the_asked_shape(n: int) -> None:
    world, meta = generate_world(n)
    integrations = world["integrations"]
    assert len(integrations) == n == meta.integrations
    assert len({i["id"] for i in integrations}) == n
    orgs = {o["id"]: o for o in world["organisations"]}
    merchants = {m["id"]: m["organisation_id"] for m in world["merchants"]}
    assert sum(o["partner_id"] == "ptr_bench" for o in orgs.values()) == partner_organisations(n)
    for integration in integrations:
        assert integration["organisation_id"] in orgs
        assert integration["merchant_ids"]
        assert all(
            merchants[m] == integration["organisation_id"] for m in integration["merchant_ids"]
        )
    custom = sum(i["type"] == "CUSTOM_ORDERS" for i in integrations)
    assert custom > n * 0.8
    desk = next(g for g in world["partner_groups"] if g["id"] == DESK_GROUP)
    assert not desk["is_admin"] and len(desk["organisation_ids"]) == DESK_ORGANISATIONS
    assert {g["is_admin"] for g in world["partner_groups"]} == {True, False}
    for key in world["api_keys"]:
        assert key["secret"].startswith("cbs_") and len(key["secret"]) >= 20
    assert len(meta.org_key_integrations) >= 20
    assert set(meta.org_key_custom_integrations) <= set(meta.org_key_integrations)
    by_id = {i["id"]: i for i in integrations}
    assert all(
        by_id[i]["organisation_id"] == KEY_ORG_ORGANISATION for i in meta.org_key_integrations
    )
    assert all(by_id[i]["type"] == "CUSTOM_ORDERS" for i in meta.org_key_custom_integrations)
    assert meta.admin_scope == sum(i["organisation_id"].startswith("org_b") for i in integrations)
    assert meta.admin_scope < n  # some integrations lie outside the partner


def test_the_largest_world_has_10000_partner_organisations() -> None:
    assert partner_organisations(1_000_000) == 10_000
    assert partner_organisations(100_000) == 1000
    assert partner_organisations(1000) == 1000


def test_streamed_file_equals_the_generated_world(tmp_path: Path) -> None:
    path = tmp_path / "world.json"
    meta = write_world(1000, path)
    world, same_meta = generate_world(1000)
    assert json.loads(path.read_text()) == world
    assert meta == same_meta


def test_loader_accepts_the_world(database_url: str) -> None:
    from cbstop.world.loader import load_world

    world, meta = generate_world(1000)
    load_world(database_url, world, key_secret=TEST_KEY_SECRET)
    assert query(database_url, "SELECT count(*) FROM integrations") == [(1000,)]
    assert query(
        database_url,
        "SELECT count(*) FROM partner_group_organisations WHERE partner_group_id = ?",
        DESK_GROUP,
    ) == [(DESK_ORGANISATIONS,)]
    assert query(
        database_url,
        "SELECT count(*) FROM integrations WHERE organisation_id = ?",
        KEY_ORG_ORGANISATION,
    ) == [(len(meta.org_key_integrations),)]
    assert query(database_url, "SELECT count(*) FROM api_keys") == [(len(world["api_keys"]),)]


# --- results code, on synthetic numbers --------------------------------------------------------


def _result(rps: float, p50: float = 1.0, errors: int = 0) -> WrkResult:
    return WrkResult(
        requests=int(rps * 10),
        seconds=10.0,
        rps=rps,
        p50_ms=p50,
        p90_ms=p50 * 2,
        p99_ms=p50 * 4,
        mean_ms=p50,
        max_ms=p50 * 10,
        status_errors=errors,
        socket_errors=0,
    )


def _m(size: int, server: str, scenario: str, *rps: float) -> Measurement:
    return Measurement(size, server, scenario, [_result(r) for r in rps])


def _synthetic() -> list[Measurement]:
    out = []
    for size, admin in ((1000, 900.0), (1_000_000, 700.0)):
        out += [
            _m(size, CBSTOP, "get_one", 1000, 1100, 900),  # median 1000
            _m(size, BARE_GET, "get_one", 1250),
            _m(size, HELLO, "hello", 10_000),
            _m(size, CBSTOP, "list_admin", admin),
            _m(size, CBSTOP, "create", 400),
            _m(size, CBSTOP, "post_keyed", 360),
            _m(size, CBSTOP, "post_replay", 880),
            _m(size, CBSTOP, "patch", 600),
            _m(size, CBSTOP, "patch_if_match", 560),
            _m(size, PEER, "get_one", 100),
            _m(size, PEER, "list_admin", 200),
            _m(size, CBSTOP_SQLITE, "get_one", 450),
        ]
    return out


def _ratios() -> dict[str, report.Ratio]:
    return {r.name: r for r in report.compute_ratios(_synthetic())}


def test_median_of_repeats() -> None:
    med = _m(1000, CBSTOP, "get_one", 1000, 1100, 900).median()
    assert med["rps"] == 1000
    assert med["requests"] == 30000


def test_ratios_and_targets() -> None:
    ratios = _ratios()
    assert ratios["GET one / bare get @1k"].value == 0.8
    assert ratios["GET one / bare get @1k"].target == 0.85
    assert ratios["GET one / bare get @1k"].reached is False
    assert ratios["GET one / bare hello @1k"].target is None
    assert ratios["GET one / bare hello @1k"].reached is None
    assert ratios["list admin / GET one @1M"].value == 0.7
    assert ratios["POST / GET one @1M"].value == 0.4
    assert ratios["POST / GET one @1M"].reached is False
    assert ratios["PATCH / GET one @1M"].reached is True
    assert ratios["cbstop get_one / peer @1M"].value == 10.0
    assert ratios["cbstop list_admin / peer @1M"].value == 3.5
    assert ratios["cbstop list_admin / peer @1M"].reached is False
    assert ratios["cbstop-sqlite get_one / peer @1k"].value == 4.5
    scale = ratios["list_admin 1M / 1k"]
    assert scale.value == pytest.approx(0.778)
    assert scale.target == 0.8 and scale.reached is False


def test_safe_write_ratios_compare_with_their_plain_twins() -> None:
    ratios = _ratios()
    keyed = ratios["POST keyed / POST @1k"]
    assert (keyed.numerator, keyed.denominator) == ("cbstop post_keyed @1k", "cbstop create @1k")
    assert (keyed.value, keyed.target, keyed.reached) == (0.9, 0.85, True)
    replay = ratios["POST replayed / GET one @1M"]
    assert replay.denominator == "cbstop get_one @1M"
    assert (replay.value, replay.target, replay.reached) == (0.88, 0.9, False)
    if_match = ratios["PATCH If-Match / PATCH @1k"]
    assert if_match.denominator == "cbstop patch @1k"
    assert (if_match.value, if_match.target, if_match.reached) == (0.933, 0.95, False)


def test_twins_keep_the_ratio_of_every_round() -> None:
    measurements = [
        _m(1000, CBSTOP, "patch", 1000, 800, 1200),
        _m(1000, CBSTOP, "patch_if_match", 1100, 840, 1080),
        _m(1000, CBSTOP, "get_one", 1000, 1000, 1000),
    ]
    ratios = {r.name: r for r in report.compute_ratios(measurements)}
    assert ratios["PATCH If-Match / PATCH @1k"].rounds == (1.1, 1.05, 0.9)
    assert ratios["PATCH If-Match / PATCH @1k"].value == 1.08  # 1080 / 1000: the medians
    assert ratios["PATCH / GET one @1k"].rounds == ()  # not twins: no rounds
    results = {
        "meta": {},
        "measurements": [m.to_json() for m in measurements],
        "ratios": [r.to_json() for r in ratios.values()],
    }
    text = report.markdown(results)
    assert "| PATCH If-Match / PATCH @1k | 1.100, 1.050, 0.900 | 1.050 | ≥ 0.95 |" in text


def test_missing_side_gives_no_value() -> None:
    ratios = {r.name: r for r in report.compute_ratios([_m(1000, CBSTOP, "get_one", 10)])}
    assert ratios["GET one / bare get @1k"].value is None
    assert ratios["GET one / bare get @1k"].reached is None


def _results() -> dict[str, Any]:
    measurements = _synthetic()
    return {
        "meta": {"stamp": "2026-01-01-0000", "workers": 2, "repeats": 3, "smoke": False},
        "measurements": [m.to_json() for m in measurements],
        "ratios": [r.to_json() for r in report.compute_ratios(measurements)],
        "rss": [{"size": 1000, "server": CBSTOP, "workers_bytes": [50 * 2**20, 60 * 2**20]}],
        "loads": [{"size": 1000, "database": "postgresql", "seconds": 1.25}],
    }


def test_markdown_table(tmp_path: Path) -> None:
    text = report.markdown(_results())
    assert "| 1k | cbstop (PostgreSQL) | GET one (org key) | 1,000 | 1.00 | 4.00 | 0 |" in text
    assert "| GET one / bare get @1k |" in text
    assert "| 1k | cbstop (PostgreSQL) | PATCH rename, If-Match | 560 |" in text
    assert (
        "| POST keyed / POST @1k | cbstop post_keyed @1k | cbstop create @1k | 0.900 | ≥ 0.85 "
        "| reached |" in text
    )
    assert "**not reached**" in text and "| reached |" in text
    assert "50.0, 60.0" in text


def test_plot_writes_a_png(tmp_path: Path) -> None:
    path = tmp_path / "plot.png"
    report.plot(_results(), path)
    assert path.read_bytes().startswith(b"\x89PNG")


def test_wrk_report_parsing() -> None:
    line = (
        'BENCH_JSON {"requests":200,"duration_us":2000000,"bytes":1,"connect_errors":1,'
        '"read_errors":0,"write_errors":0,"status_errors":3,"timeouts":2,"p50_us":1500,'
        '"p90_us":3000,"p99_us":9000,"mean_us":1700.0,"max_us":12000}'
    )
    result = parse_report("Running 2s test\n" + line + "\n")
    assert result.rps == 100.0
    assert (result.p50_ms, result.p99_ms) == (1.5, 9.0)
    assert (result.status_errors, result.socket_errors) == (3, 3)


def test_size_parsing() -> None:
    assert parse_sizes("1k,100k,1M") == [1000, 100_000, 1_000_000]
    assert parse_sizes("2500") == [2500]
