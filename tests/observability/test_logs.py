"""What a real server writes on stderr: JSON lines only, uvicorn's own messages among them, in
the supervisor and in every worker; one startup line that names the database but never its
credentials; CBSTOP_LOG_LEVEL; access lines with client, user agent and size, and without
the health probes when CBSTOP_ACCESS_LOG_PROBES is off; the client address forwarded by a
trusted proxy."""

from __future__ import annotations

import httpx
import pytest

from tests.observability.helpers import (
    access_lines,
    messages,
    raw_exchange,
    samples,
    serving,
    wait_for_workers,
)
from tests.reliability.processes import running

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("servers")]

PASSWORD = "pw-never-logged-4Qz"  # PostgreSQL here trusts any password
# A request line httptools cannot parse: uvicorn's "Invalid HTTP request received."
MALFORMED = b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad\x01Name: y\r\n\r\n"


def _with_credentials(database_url: str, dialect: str) -> tuple[str, str]:
    """The URL with a password and a query string (PostgreSQL), and where the startup line
    must say the database is."""
    if dialect == "sqlite":
        return database_url, database_url.removeprefix("sqlite:///")
    rest = database_url.removeprefix("postgresql://")
    user, _, at = rest.partition("@")
    return f"postgresql://{user}:{PASSWORD}@{at}?application_name=cbstop-logs-test", at


def test_every_line_is_json_with_uvicorns_own_and_the_startup_line_names_no_credentials(
    database_url: str, dialect: str
) -> None:
    url, at = _with_credentials(database_url, dialect)
    with running(url, workers=2) as server:
        assert server.proc is not None
        supervisor = server.proc.pid
        wait_for_workers(server, 2)
        assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
        refused = raw_exchange(server, MALFORMED)
        server.stop()
        stderr = server.stderr

    assert refused.startswith(b"HTTP/1.1 400 "), refused
    lines = messages(stderr)  # every line of stderr parses as JSON
    assert PASSWORD not in stderr
    startup = [line for line in lines if line.get("event") == "startup"]
    assert len(startup) == 1, startup
    line = startup[0]
    assert line["logger"] == "cbstop" and line["level"] == "info"
    assert line["pid"] == supervisor  # the process that binds
    assert (line["address"], line["workers"]) == (server.url, 2)
    assert (line["database"], line["database_at"]) == (dialect, at)
    assert "postgres@" not in line["message"] and "application_name" not in line["message"]
    assert at in line["message"] and server.url in line["message"]

    by_uvicorn = [line for line in lines if line["logger"] == "uvicorn.error"]
    said = [(line["level"], line["message"], line["pid"]) for line in by_uvicorn]
    assert ("info", f"Started parent process [{supervisor}]", supervisor) in said
    assert ("info", f"Stopping parent process [{supervisor}]", supervisor) in said
    workers = {
        pid
        for level, message, pid in said
        if message == f"Started server process [{pid}]" and level == "info"
    }
    assert len(workers) == 2 and supervisor not in workers, said
    for pid in workers:
        assert ("info", "Application startup complete.", pid) in said
        assert ("info", "Shutting down", pid) in said
    invalid = [line for line in by_uvicorn if line["message"] == "Invalid HTTP request received."]
    assert len(invalid) == 1 and invalid[0]["level"] == "warning", invalid
    assert invalid[0]["pid"] in workers


def test_log_level_warning_hides_info_lines_but_not_warnings_nor_access_lines(
    database_url: str,
) -> None:
    env = {"CBSTOP_LOG_LEVEL": "warning"}
    with running(database_url, env=env) as server:
        answer = httpx.get(server.url + "/healthz", headers={"X-Request-Id": "lvl-1"})
        assert answer.status_code == 200
        refused = raw_exchange(server, MALFORMED)
        server.stop()
        stderr = server.stderr

    assert refused.startswith(b"HTTP/1.1 400 "), refused
    lines = messages(stderr)
    assert [line["level"] for line in lines] == ["warning"], lines
    assert lines[0]["message"] == "Invalid HTTP request received."
    # The access log has its own switch (CBSTOP_ACCESS_LOG), not the level.
    assert [line["request_id"] for line in access_lines(stderr)][-1] == "lvl-1"


def test_probes_can_be_left_out_of_the_access_log_and_are_still_counted(
    database_url: str,
) -> None:
    env = {"CBSTOP_ACCESS_LOG_PROBES": "false"}
    with running(database_url, env=env) as server, httpx.Client(base_url=server.url) as client:
        for path, status in [("/healthz", 200), ("/readyz", 200), ("/metrics", 200)]:
            answer = client.get(path, headers={"X-Request-Id": f"probe-{path[1:]}"})
            assert answer.status_code == status
        answer = client.get("/v1/integrations", headers={"X-Request-Id": "api-1"})
        assert answer.status_code == 401
        metrics = client.get("/metrics").text
        server.stop()
        stderr = server.stderr

    assert [line["request_id"] for line in access_lines(stderr)] == ["api-1"]
    counted = {
        labels["route"]: value
        for name, labels, value in samples(metrics)
        if name == "cbstop_requests_total"
    }
    assert counted["/healthz"] == 1 and counted["/metrics"] == 1
    assert counted["/readyz"] >= 1 and counted["/v1/integrations"] == 1


@pytest.mark.parametrize(
    ("args", "client"),
    [(["--proxy-headers"], "203.0.113.7"), ([], "127.0.0.1")],
    ids=["trusted", "not-trusted"],
)
def test_the_access_line_shows_the_forwarded_client_only_with_proxy_headers(
    database_url: str, args: list[str], client: str
) -> None:
    headers = {
        "X-Forwarded-For": "203.0.113.7",
        "X-Request-Id": "fwd-1",
        "User-Agent": "agent/1.0",
    }
    with serving(database_url, args=args) as server:
        answer = httpx.get(server.url + "/healthz", headers=headers, timeout=10)
        assert answer.status_code == 200
        server.stop()
        stderr = server.stderr

    line = next(line for line in access_lines(stderr) if line["request_id"] == "fwd-1")
    assert (line["client"], line["user_agent"], line["bytes"]) == (
        client,
        "agent/1.0",
        len(answer.content),
    )
