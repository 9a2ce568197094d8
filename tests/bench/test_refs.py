"""The database references on a real PostgreSQL database holding the 1k benchmark world: bare
get reads what cbstop's GET one shows, and bare write writes what cbstop's create writes (the
integration, its merchants, the counts, its event), answering as cbstop does; each on cbstop's
own pool. A ceiling that did less work than cbstop would flatter every fraction of it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from bench.refs import bare, bare_get, bare_write
from bench.refs.pooled import Pooled
from bench.worlds import BenchWorld, generate_world
from cbstop.db.postgres import PostgresDatabase
from tests.support import TEST_KEY_SECRET, api_client, bearer, query, snapshot

EVENT_COLUMNS = "type, organisation_id, partner_id, data, idempotency_key, actor_type"


@pytest.fixture
def bench_world(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> BenchWorld:
    """The 1k world in a fresh PostgreSQL database, named by CBSTOP_DATABASE_URL as the
    harness names it to the references."""
    from cbstop.world.loader import load_world

    world, meta = generate_world(1000)
    load_world(postgres_url, world, key_secret=TEST_KEY_SECRET)
    monkeypatch.setenv("CBSTOP_DATABASE_URL", postgres_url)
    return meta


@pytest.fixture
def writer(bench_world: BenchWorld) -> Iterator[TestClient]:
    with TestClient(bare_write.app) as client:
        yield client


def _body(meta: BenchWorld, **over: Any) -> dict[str, Any]:
    return {
        "organisation_id": meta.org_key_organisation,
        "name": "bare write",
        "type": "CUSTOM_ORDERS",
        "merchant_ids": meta.org_key_merchants,
        **over,
    }


def _count(client: Any, meta: BenchWorld) -> int:
    page = client.get("/v1/integrations?limit=1", headers=bearer(meta.org_key))
    assert page.status_code == 200
    count: int = page.json()["count"]
    return count


def test_the_references_run_on_cbstop_s_own_pool(bench_world: BenchWorld) -> None:
    for app in (bare_get.app, bare_write.app, bare.app):
        with TestClient(app) as client:
            assert client.get("/healthz").status_code == 200
    for module in (bare_get, bare_write, bare):
        with TestClient(module.app):
            assert isinstance(module._pooled, Pooled)
            assert isinstance(module._pooled.db, PostgresDatabase)


def test_bare_get_answers_what_get_one_shows(bench_world: BenchWorld, postgres_url: str) -> None:
    meta = bench_world
    with TestClient(bare_get.app) as bare, api_client(postgres_url) as api:
        for integration_id in meta.org_key_integrations[:5]:
            ours = bare.get(f"/v1/integrations/{integration_id}")
            theirs = api.get(f"/v1/integrations/{integration_id}", headers=bearer(meta.org_key))
            assert (ours.status_code, theirs.status_code) == (200, 200)
            assert ours.json() == theirs.json()
        missing = bare.get("/v1/integrations/int_nowhere")
        assert missing.status_code == 404
        assert missing.json()["errors"][0]["code"] == "NOT_FOUND"


def test_bare_write_writes_what_cbstop_s_create_writes(
    writer: TestClient, bench_world: BenchWorld, postgres_url: str
) -> None:
    meta = bench_world
    with api_client(postgres_url) as api:
        before = _count(api, meta)
        made = writer.post("/v1/integrations", json=_body(meta))
        assert made.status_code == 201, made.text
        shown = made.json()
        assert made.headers["location"] == f"/v1/integrations/{shown['id']}"
        assert made.headers["etag"] == '"1"'
        theirs = api.post(
            "/v1/integrations", headers=bearer(meta.org_key), json=_body(meta, name="cbstop")
        )
        assert theirs.status_code == 201
        # The same representation, the same stored rows: GET one shows bare write's as it
        # shows cbstop's, and each create counted once.
        stored = api.get(f"/v1/integrations/{shown['id']}", headers=bearer(meta.org_key))
        assert stored.status_code == 200 and stored.json() == shown
        same = ("organisation_id", "type", "status", "merchant_ids")
        assert {k: shown[k] for k in same} == {k: theirs.json()[k] for k in same}
        assert shown["links"] == [{"rel": "self", "uri": made.headers["location"]}]
        assert _count(api, meta) == before + 2
    events = {
        row[0]: row[1:]
        for row in query(
            postgres_url,
            f"SELECT integration_id, {EVENT_COLUMNS} FROM events WHERE integration_id IN (?, ?)",
            shown["id"],
            theirs.json()["id"],
        )
    }
    ours, cbstop_s = events[shown["id"]], events[theirs.json()["id"]]
    assert json.loads(ours[3]) == {"object": shown}
    assert ours[:3] + ours[4:] == cbstop_s[:3] + cbstop_s[4:]
    assert ours[:3] == ("integration.created", meta.org_key_organisation, "ptr_bench")
    assert (ours[4], ours[5]) == (None, "organisation")
    request_ids = query(postgres_url, "SELECT request_id FROM events WHERE integration_id = ?",
                        shown["id"])  # fmt: skip
    assert request_ids[0][0]


@pytest.mark.parametrize(
    ("over", "status", "code"),
    [
        ({"organisation_id": "org_nowhere"}, 404, "NOT_FOUND"),
        ({"merchant_ids": ["mer_nowhere"]}, 422, "INVALID_MERCHANT_IDS"),
    ],
)
def test_bare_write_refuses_as_cbstop_does_and_writes_nothing(
    writer: TestClient,
    bench_world: BenchWorld,
    postgres_url: str,
    over: dict[str, Any],
    status: int,
    code: str,
) -> None:
    before = snapshot(postgres_url)
    answer = writer.post("/v1/integrations", json=_body(bench_world, **over))
    assert answer.status_code == status
    assert answer.json()["errors"][0]["code"] == code
    assert snapshot(postgres_url) == before


def test_bare_write_answers_400_to_a_body_it_cannot_read(
    writer: TestClient, postgres_url: str
) -> None:
    before = snapshot(postgres_url)
    for content in (b"not json", b'{"name": "no organisation"}', b"[]"):
        answer = writer.post("/v1/integrations", content=content)
        assert answer.status_code == 400
        assert answer.json()["errors"][0]["code"] == "INVALID_BODY"
    assert writer.get("/v1/integrations").status_code == 404
    assert snapshot(postgres_url) == before


def test_the_harness_s_one_process_serves_both_references(
    bench_world: BenchWorld, postgres_url: str
) -> None:
    meta = bench_world
    with TestClient(bare.app) as both:
        made = both.post("/v1/integrations", json=_body(meta))
        assert made.status_code == 201
        shown = both.get(made.headers["location"])
        assert shown.status_code == 200 and shown.json() == made.json()
        assert both.delete(made.headers["location"]).status_code == 404
    assert query(postgres_url, "SELECT name FROM integrations WHERE id = ?", made.json()["id"]) == [
        ("bare write",)
    ]
