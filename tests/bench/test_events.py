"""The benchmark's events (issue 13), written straight in SQL after a world's load: as many as
asked, numbered in time order, settled for the sequencer, shaped like the events the API
records; on both databases, at the 1k world (a second or two)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from bench import jobs, report
from bench.events import generate_events, has_events
from bench.jobs import EVENT_SCENARIOS, Job, build_jobs, probe
from bench.procs import BenchError
from bench.report import BASELINE, CBSTOP, CBSTOP_SQLITE, Measurement
from bench.worlds import generate_world
from bench.wrk import WrkResult
from cbstop.events.schemas import Event, represent
from tests.bench.support import run_args, servers, world
from tests.support import TEST_KEY_SECRET, api_client, bearer, query


def _loaded(database_url: str) -> None:
    from cbstop.world.loader import load_world

    load_world(database_url, generate_world(1000)[0], key_secret=TEST_KEY_SECRET)


def test_one_event_per_integration_numbered_in_time_order_and_settled(database_url: str) -> None:
    _loaded(database_url)
    now = time.time_ns() // 1000
    assert generate_events(database_url, now_us=now) == 1000

    rows = query(
        database_url,
        "SELECT e.id, e.seq, e.created_at, e.type, e.organisation_id, e.partner_id, "
        "e.integration_id, e.data, e.actor_type, i.organisation_id, i.partner_id "
        "FROM events e JOIN integrations i ON i.id = e.integration_id ORDER BY e.seq",
    )
    assert [r[1] for r in rows] == list(range(1, 1001))
    assert len({r[0] for r in rows}) == 1000
    assert all(r[0].startswith("evt_") and len(r[0]) == 26 for r in rows)
    times = [r[2] for r in rows]
    assert times == sorted(times) and len(set(times)) == 1000
    assert times[-1] == now and now - times[0] < 86_400 * 1_000_000  # inside any retention
    # Every integration once, in its own organisation and partner.
    assert len({r[6] for r in rows}) == 1000
    assert all(r[4] == r[9] and r[5] == r[10] for r in rows)
    assert {r[8] for r in rows} == {"organisation", "partner"}
    updated = [r for r in rows if r[3] == "integration.updated"]
    assert [r[1] for r in updated] == list(range(5, 1001, 5))
    for r in rows:
        data = json.loads(r[7])
        if r[3] == "integration.updated":
            assert data["previous_attributes"] == {"name": f"Renamed {r[1]}"}
        else:
            assert set(data) == {"object"}
    assert query(database_url, "SELECT last_seq, fanned_out FROM event_log") == [(1000, 1000)]


def test_each_event_carries_the_integration_as_the_api_shows_it(database_url: str) -> None:
    world, meta = generate_world(1000)
    from cbstop.world.loader import load_world

    load_world(database_url, world, key_secret=TEST_KEY_SECRET)
    generate_events(database_url, 1500)
    sample = meta.org_key_integrations[:5]
    with api_client(database_url) as client:
        for integration_id in sample:
            shown = client.get(f"/v1/integrations/{integration_id}", headers=bearer(meta.org_key))
            assert shown.status_code == 200
            datas = query(
                database_url,
                "SELECT data FROM events WHERE integration_id = ? ORDER BY seq",
                integration_id,
            )
            # 1,500 events over 1,000 integrations: the first 500 (in id order) have two.
            assert len(datas) in (1, 2)
            for (data,) in datas:
                assert json.loads(data)["object"] == shown.json()
    assert query(database_url, "SELECT count(*), max(seq) FROM events") == [(1500, 1500)]
    # The server's sequencer found nothing to number and nothing to fan out.
    assert query(database_url, "SELECT last_seq, fanned_out FROM event_log") == [(1500, 1500)]
    assert query(database_url, "SELECT count(*) FROM webhook_deliveries") == [(0,)]


def test_the_events_page_scenario_reads_a_full_page_newest_first(database_url: str) -> None:
    world, meta = generate_world(1000)
    from cbstop.world.loader import load_world

    load_world(database_url, world, key_secret=TEST_KEY_SECRET)
    generate_events(database_url)
    with api_client(database_url) as client:
        for key in (meta.org_key, meta.admin_key):
            page = client.get("/v1/events?limit=20", headers=bearer(key))
            if page.status_code == 404 and key == meta.org_key:
                pytest.skip("GET /v1/events is not built yet (issue 13, another part)")
            assert page.status_code == 200
            body = page.json()
            assert len(body["items"]) == 20 and body["has_more"] is True
            first = body["items"][0]
            scope = (
                ("organisation_id = ?", meta.org_key_organisation)
                if key == meta.org_key
                else ("partner_id = ?", "ptr_bench")
            )
            newest = query(
                database_url,
                f"SELECT id FROM events WHERE {scope[0]} ORDER BY seq DESC LIMIT 1",
                scope[1],
            )
            assert first["id"] == newest[0][0]
            stored = query(
                database_url,
                "SELECT e.id, e.type, e.created_at, e.organisation_id, e.integration_id, e.data, "
                "e.request_id, e.idempotency_key, e.actor_type FROM events e WHERE e.id = ?",
                first["id"],
            )
            assert first == json.loads(orjson.dumps(represent(Event(*stored[0]))))


def test_a_schema_without_events_is_left_alone(empty_database_url: str) -> None:
    assert not has_events(empty_database_url)
    assert generate_events(empty_database_url) == 0


# --- the scenarios, their checks and ratios (a fake API; nothing timed) ------------------------


def _page(items: int, has_more: bool, newest_first: bool = True) -> dict[str, Any]:
    times = [f"2026-12-03T10:00:{s:02d}.000000Z" for s in range(items)]
    if newest_first:
        times.reverse()
    return {"items": [{"created_at": t} for t in times], "has_more": has_more}


def _events_jobs(tmp_path: Path, *kinds: str) -> list[Job]:
    only = {"get_one", *EVENT_SCENARIOS}
    return build_jobs(servers(tmp_path, *kinds), world(), tmp_path, run_args(only=only))


def _installed(
    monkeypatch: pytest.MonkeyPatch, answer: Callable[[httpx.Request], httpx.Response]
) -> None:
    monkeypatch.setattr(
        jobs, "client_for_checks", lambda: httpx.Client(transport=httpx.MockTransport(answer))
    )


def test_the_events_scenarios_page_with_the_org_and_admin_keys(tmp_path: Path) -> None:
    built = {job.scenario: job for job in _events_jobs(tmp_path, CBSTOP, CBSTOP_SQLITE)}
    meta = world()
    for name, key in (("events_page", meta.org_key), ("events_page_admin", meta.admin_key)):
        job = built[name]
        assert job.script == "paths.lua" and job.args[0] == key
        assert (tmp_path / f"{name}.txt").read_text() == "/v1/events?limit=20\n"
        assert job.probe is not None and job.probe.path == "/v1/events?limit=20"
    kinds = {(job.server_kind, job.scenario) for job in _events_jobs(tmp_path, CBSTOP_SQLITE)}
    assert (CBSTOP_SQLITE, "events_page") in kinds


@pytest.mark.parametrize(
    ("page", "said"),
    [
        (_page(20, True), None),
        (_page(0, False), "0 events, has_more False"),
        (_page(20, False), "20 events, has_more False"),
        (_page(20, True, newest_first=False), "not newest first"),
    ],
)
def test_an_events_page_must_be_full_and_newest_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page: dict[str, Any], said: str | None
) -> None:
    _installed(monkeypatch, lambda request: httpx.Response(200, json=page))
    job = next(j for j in _events_jobs(tmp_path, CBSTOP) if j.scenario == "events_page")
    if said is None:
        assert probe([job]) == [job]
    else:
        with pytest.raises(BenchError, match=said):
            probe([job])


def test_a_baseline_build_without_events_only_loses_the_events_scenarios(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def before_issue_13(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/events":
            return httpx.Response(404, json={"code": "NOT_FOUND"})
        return httpx.Response(200, json={})

    _installed(monkeypatch, before_issue_13)
    assert [job.scenario for job in probe(_events_jobs(tmp_path, BASELINE))] == ["get_one"]
    with pytest.raises(BenchError, match="answered 404, expected 200"):
        probe(_events_jobs(tmp_path, CBSTOP))


def _wrk(rps: float) -> WrkResult:
    return WrkResult(int(rps), 1.0, rps, 1.0, 2.0, 4.0, 1.0, 10.0, 0, 0)


def _m(size: int, server: str, scenario: str, *rps: float) -> Measurement:
    return Measurement(size, server, scenario, [_wrk(r) for r in rps])


def test_events_pages_against_get_one_and_writes_against_the_baseline_build() -> None:
    measurements = [
        _m(1_000_000, CBSTOP, "get_one", 1000, 1000, 1000),
        _m(1_000_000, CBSTOP, "events_page", 600, 400, 550),
        _m(1_000_000, CBSTOP, "events_page_admin", 450, 450, 450),
        _m(1_000_000, CBSTOP, "create", 900, 800, 850),
        _m(1_000_000, BASELINE, "create", 1000, 1000, 1000),
        _m(1_000_000, CBSTOP, "patch", 800, 900, 700),
        _m(1_000_000, BASELINE, "patch", 1000, 1000, 1000),
        _m(1_000_000, CBSTOP_SQLITE, "get_one", 500),
        _m(1_000_000, CBSTOP_SQLITE, "events_page", 300),
    ]
    ratios = {r.name: r for r in report.compute_ratios(measurements)}
    page = ratios["events page / GET one @1M"]
    assert (page.value, page.target, page.reached) == (0.55, 0.5, True)
    assert page.rounds == (0.6, 0.4, 0.55)
    assert ratios["events page admin / GET one @1M"].reached is False
    assert ratios["events page / GET one (SQLite) @1M"].value == 0.6
    post = ratios["POST / POST of the baseline build @1M"]
    assert (post.numerator, post.denominator) == ("cbstop create @1M", "baseline create @1M")
    assert (post.value, post.target, post.reached, post.rounds) == (
        0.85,
        0.85,
        True,
        (0.9, 0.8, 0.85),
    )
    patch = ratios["PATCH / PATCH of the baseline build @1M"]
    assert (patch.value, patch.reached) == (0.8, False)
    # No baseline in the run: no such row.
    alone = {r.name for r in report.compute_ratios(measurements[:4])}
    assert "POST / POST of the baseline build @1M" not in alone


def test_the_run_takes_an_events_count_and_can_skip_the_webhooks() -> None:
    from bench.run import _args

    default = _args([])
    assert (default.events, default.no_webhooks) == (None, False)
    chosen = _args(["--events", "1M", "--no-webhooks"])
    assert (chosen.events, chosen.no_webhooks) == (1_000_000, True)
