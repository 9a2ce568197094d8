"""Metrics of an app built in-process (`create_app`, no `cbstop serve`): no multiprocess
directory, so each app keeps and renders its own numbers, in the format a server gives."""

from __future__ import annotations

import os

from prometheus_client.parser import text_string_to_metric_families

from tests.observability.helpers import samples
from tests.support import api_client


def test_an_app_built_in_process_counts_its_own_requests_in_valid_prometheus_text(
    database_url: str,
) -> None:
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    with api_client(database_url) as first, api_client(database_url) as second:
        for _ in range(3):
            assert first.get("/healthz").status_code == 200
        assert second.get("/healthz").status_code == 200
        text = first.get("/metrics").text
        other = second.get("/metrics").text

    families = {f.name: f for f in text_string_to_metric_families(text)}  # parses as Prometheus
    assert {
        "cbstop_requests",
        "cbstop_request_duration_seconds",
        "cbstop_db_pool_in_use",
        "cbstop_db_pool_waiting",
        "cbstop_process_resident_memory_bytes",
        "cbstop_process_cpu_seconds",
        "cbstop_process_open_fds",
        "cbstop_process_start_time_seconds",
        "cbstop_build_info",
    } <= set(families)

    def healthz(exposition: str) -> float:
        return sum(
            value
            for name, labels, value in samples(exposition)
            if name == "cbstop_requests_total" and labels["route"] == "/healthz"
        )

    assert (healthz(text), healthz(other)) == (3, 1)  # each app its own
    pids = {
        labels["pid"] for name, labels, _ in samples(text) if name.startswith("cbstop_process_")
    }
    assert pids == {str(os.getpid())}
    assert "created" not in text
