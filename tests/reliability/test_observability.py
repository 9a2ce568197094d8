"""What an operator sees of a real server: one JSON access line per request on stderr, and
Prometheus metrics by route and status, with latency, the pool's use, the process and the
build. (Two workers, uvicorn's own lines and the log settings: tests/observability/.)"""

from __future__ import annotations

import json
import re
from collections import Counter

import httpx
import pytest

from cbstop.web.edge import USER_AGENT_LIMIT
from cbstop.world.loader import load_world
from tests.integrations.helpers import secret, world
from tests.observability.helpers import samples as prometheus_samples
from tests.reliability.processes import running
from tests.support import TEST_KEY_SECRET

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("servers")]

ITEM = "/v1/integrations/{integration_id}"
LINE_KEYS = {
    "time",
    "request_id",
    "method",
    "route",
    "status",
    "duration_ms",
    "client",
    "user_agent",
    "bytes",
    "key_id",
    "owner",
}


def _agent(n: int) -> str:
    return f"probe/{n}/" + "x" * (n * 40)


def test_access_log_and_metrics_of_a_real_server(database_url: str) -> None:
    matrix = world("matrix")
    load_world(database_url, matrix, key_secret=TEST_KEY_SECRET)
    org = {"Authorization": f"Bearer {secret(matrix, 'key_org_a1')}"}
    admin = {"Authorization": f"Bearer {secret(matrix, 'key_admin_a')}"}
    # (method, path, headers, expected status, route template, key id, owner)
    plan = [
        ("GET", "/v1/integrations", org, 200, "/v1/integrations", "key_org_a1",
         "organisation:org_a1"),
        ("GET", "/v1/integrations/int_a1_orders", org, 200, ITEM, "key_org_a1",
         "organisation:org_a1"),
        ("GET", "/v1/integrations/int_a2_orders", admin, 200, ITEM, "key_admin_a",
         "partner_group:pgrp_a_admin"),
        ("GET", "/v1/integrations/int_b1_orders", org, 404, ITEM, "key_org_a1",
         "organisation:org_a1"),
        ("GET", "/v1/integrations/int_a1_orders", {}, 401, ITEM, None, None),
        ("GET", "/v1/elsewhere", {}, 404, "unmatched", None, None),
        ("GET", "/healthz", {}, 200, "/healthz", None, None),
    ]  # fmt: skip
    with (
        running(database_url, env={"CBSTOP_ACCESS_LOG": "true"}) as server,
        httpx.Client(base_url=server.url, timeout=5) as client,
    ):
        sent, sizes = [], []
        for n, (method, path, headers, status, *_) in enumerate(plan * 3):
            rid = f"obs-{n}"
            # Growing past the 512 characters an access line keeps of it.
            agent = {"User-Agent": _agent(n)}
            answer = client.request(method, path, headers={**headers, **agent, "X-Request-Id": rid})
            assert answer.status_code == status, (path, answer.text)
            assert answer.headers["x-request-id"] == rid
            sent.append(rid)
            sizes.append(len(answer.content))
        metrics = client.get("/metrics")
        server.stop()
        stderr = server.stderr

    lines = [json.loads(line) for line in stderr.splitlines() if '"request_id"' in line]
    by_id = {line["request_id"]: line for line in lines}
    assert [line["request_id"] for line in lines if line["request_id"] in sent] == sent
    assert len(by_id) == len(lines), "a request id was logged twice"
    for n, (rid, size, (method, _, _, status, route, key_id, owner)) in enumerate(
        zip(sent, sizes, plan * 3, strict=True)
    ):
        line = by_id[rid]
        assert set(line) == LINE_KEYS
        assert (line["client"], line["user_agent"], line["bytes"]) == (
            "127.0.0.1",
            _agent(n)[:USER_AGENT_LIMIT],
            size,
        )
        assert (line["method"], line["route"], line["status"]) == (method, route, status)
        assert (line["key_id"], line["owner"]) == (key_id, owner)
        assert isinstance(line["duration_ms"], float | int) and line["duration_ms"] >= 0
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", line["time"])

    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = list(prometheus_samples(metrics.text))
    totals = Counter[tuple[str, str, str]]()
    for name, labels, value in samples:
        if name == "cbstop_requests_total":
            totals[labels["method"], labels["route"], labels["status"]] += int(value)
    expected = Counter[tuple[str, str, str]]()
    for method, _, _, status, route, *_ in plan * 3:
        expected[method, route, str(status)] += 1
    for triple, count in expected.items():
        assert totals[triple] >= count, (triple, totals)
    assert totals["GET", ITEM, "200"] == expected["GET", ITEM, "200"]

    # The latency histogram of the item route: cumulative buckets ending in +Inf = count.
    buckets = [
        (labels["le"], value)
        for name, labels, value in samples
        if name == "cbstop_request_duration_seconds_bucket" and labels["route"] == ITEM
    ]
    counts = [value for _, value in buckets]
    assert counts == sorted(counts) and buckets[-1][0] == "+Inf"
    histogram = {
        name: value
        for name, labels, value in samples
        if name.startswith("cbstop_request_duration_seconds_") and labels.get("route") == ITEM
    }
    assert histogram["cbstop_request_duration_seconds_count"] == counts[-1] == 12
    assert histogram["cbstop_request_duration_seconds_sum"] > 0
    gauges = {name: value for name, _, value in samples if name.startswith("cbstop_db_pool")}
    assert set(gauges) == {"cbstop_db_pool_in_use", "cbstop_db_pool_waiting"}
    assert gauges["cbstop_db_pool_waiting"] == 0
    # Each worker's process metrics, labelled with its pid, and the build.
    for name in (
        "cbstop_process_resident_memory_bytes",
        "cbstop_process_cpu_seconds",
        "cbstop_process_open_fds",
        "cbstop_process_start_time_seconds",
    ):
        found = [(labels, value) for n, labels, value in samples if n == name]
        assert len(found) == 1 and set(found[0][0]) == {"pid"} and found[0][1] > 0, (name, found)
    build = [labels for name, labels, value in samples if name == "cbstop_build_info"]
    assert len(build) == 1 and set(build[0]) == {"version", "python"}
    # No label ever carries key material.
    for key in matrix["api_keys"]:
        assert key["secret"] not in metrics.text
