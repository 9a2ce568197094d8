"""The benchmark's webhook delivery measurement (issue 13): its receiver, its arithmetic, and
one small run against a real `cbstop serve` on each database (20 creates; nothing timed is
asserted)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from bench import report
from bench.events import generate_events
from bench.procs import Server, free_port
from bench.run import KEY_SECRET, serve_argv, server_env
from bench.webhooks import (
    Arrival,
    Receiver,
    Since,
    delivery_stats,
    measure_delivery,
    parse_rfc3339_us,
)
from bench.worlds import generate_world
from bench.wrk import WrkResult
from cbstop.events.schemas import rfc3339
from tests.support import query


def _arrival(at_us: int, webhook_id: str, created_us: int) -> Arrival:
    body = orjson.dumps({"id": webhook_id, "created_at": rfc3339(created_us)})
    return Arrival(at_us, webhook_id, "0", "v1,x", body)


def test_the_receiver_answers_204_on_one_connection_and_records_each_arrival() -> None:
    receiver = Receiver()
    receiver.start()
    try:
        with httpx.Client() as client:
            for i in range(3):
                headers = {
                    "webhook-id": f"evt_{i}",
                    "webhook-timestamp": "1700000000",
                    "webhook-signature": "v1,abc",
                }
                answer = client.post(receiver.url, content=b'{"n": %d}' % i, headers=headers)
                assert answer.status_code == 204 and answer.content == b""
        receiver.wait_for(3, idle=1)
    finally:
        receiver.stop()
    assert [(a.webhook_id, a.timestamp, a.signature, a.body) for a in receiver.arrivals] == [
        (f"evt_{i}", "1700000000", "v1,abc", b'{"n": %d}' % i) for i in range(3)
    ]
    times = [a.at_us for a in receiver.arrivals]
    assert times == sorted(times) and abs(times[0] - time.time_ns() // 1000) < 10_000_000


def test_stats_count_each_event_once_at_its_first_arrival() -> None:
    second = 1_000_000
    t0 = 1_800_000_000 * second
    arrivals = [
        _arrival(t0 + 10_000, "evt_a", t0),  # 10 ms
        _arrival(t0 + second + 30_000, "evt_b", t0 + second),  # 30 ms
        _arrival(t0 + 2 * second, "evt_c", t0 + 2 * second - 20_000),  # 20 ms
        _arrival(t0 + 3 * second, "evt_a", t0),  # again: a duplicate, not a lag
    ]
    writes = WrkResult(3, 1.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0, 0)
    stats = delivery_stats(
        arrivals, 4, writes, "whsec_x", lambda secret, a: a.webhook_id != "evt_b"
    )
    assert stats == {
        "expected": 4,
        "delivered": 3,
        "duplicates": 1,
        "missing": 1,
        "bad_signatures": 1,
        "writes_per_s": 3.0,
        "delivered_per_s": 1.5,  # 3 events from the first arrival to the last, 2 s
        "lag_p50_ms": 20.0,
        "lag_p99_ms": 30.0,
        "lag_max_ms": 30.0,
    }
    assert delivery_stats([], 5, None)["missing"] == 5


def test_events_created_before_the_run_are_left_out() -> None:
    t0 = 1_800_000_000 * 1_000_000
    since = Since(t0)
    arrivals = [_arrival(t0 + 5, "evt_old", t0 - 1), _arrival(t0 + 6, "evt_new", t0)]
    assert since(arrivals[:1]) == 0
    assert since(arrivals) == 1
    assert since([*arrivals, _arrival(t0 + 7, "evt_new", t0)]) == 1  # a duplicate
    assert [a.webhook_id for a in arrivals if since.ours(a)] == ["evt_new"]


def test_the_report_shows_the_delivery_rows() -> None:
    row = {"size": 1000, "server": "cbstop", "earlier": 9, **delivery_stats([], 3, None)}
    results = {"meta": {}, "measurements": [], "ratios": [], "webhooks": [row]}
    text = report.markdown(results)
    assert "## Webhook delivery (reported, no target)" in text
    assert "| 1k | cbstop (PostgreSQL) | — | 3 | 0 | — | — | — | — | 0 | 3 | — | 9 |" in text


def test_rfc3339_round_trip() -> None:
    assert parse_rfc3339_us(rfc3339(1_764_756_905_123_456)) == 1_764_756_905_123_456


@pytest.fixture
def bench_server(database_url: str, tmp_path: Path) -> Iterator[tuple[Server, str]]:
    """`cbstop serve` as the harness starts it (one worker) on the 1k world with its events."""
    from cbstop.world.loader import load_world

    load_world(database_url, generate_world(1000)[0], key_secret=KEY_SECRET)
    generate_events(database_url)
    port = free_port()
    server = Server("cbstop", serve_argv(database_url, port, 1), server_env(), port,
                    tmp_path / "serve.log")  # fmt: skip
    server.start()
    try:
        server.wait_ready(60)
        yield server, database_url
    finally:
        server.stop()


def test_a_delivery_run_gets_every_created_event_signed(bench_server: tuple[Server, str]) -> None:
    server, database_url = bench_server
    meta = generate_world(1000)[1]

    def create() -> WrkResult:
        started = time.perf_counter()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for i in range(20):
                answer = client.post(
                    "/v1/integrations",
                    headers={"Authorization": f"Bearer {meta.org_key}"},
                    json={
                        "organisation_id": meta.org_key_organisation,
                        "name": f"delivered {i}",
                        "type": "CUSTOM_ORDERS",
                        "merchant_ids": meta.org_key_merchants,
                    },
                )
                assert answer.status_code == 201, answer.text
        took = time.perf_counter() - started
        return WrkResult(20, took, 20 / took, 1.0, 1.0, 1.0, 1.0, 1.0, 0, 0)

    row = measure_delivery(server.url, database_url, meta, create)
    assert (row["expected"], row["delivered"], row["missing"], row["bad_signatures"]) == (
        20,
        20,
        0,
        0,
    ), server.log_tail(20)
    assert row["duplicates"] == 0
    assert row["lag_p50_ms"] > 0 and row["lag_max_ms"] >= row["lag_p99_ms"] >= row["lag_p50_ms"]
    # The endpoint is disabled afterwards; the world's generated events were never sent.
    assert query(
        database_url, "SELECT status FROM webhook_endpoints WHERE id = 'we_bench_delivery'"
    ) == [("disabled",)]
    assert query(database_url, "SELECT count(*) FROM webhook_deliveries") == [(20,)]
