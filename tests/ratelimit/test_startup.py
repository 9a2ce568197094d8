"""What `serve` says of its rate limits when it starts: the limits, where they are counted
(never Redis's password), and a warning when several workers each count their own."""

from __future__ import annotations

import pytest

from tests.observability.helpers import messages, wait_for_workers
from tests.reliability.processes import running

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("servers")]

PASSWORD = "redis-pass-not-for-logs"
PER_WORKER = "rate limits are counted by each of the 2 workers"


def _startup(stderr: str) -> dict[str, object]:
    lines = [line for line in messages(stderr) if line.get("event") == "startup"]
    assert len(lines) == 1, lines
    return lines[0]


def test_two_workers_counting_in_memory_are_named_and_warned_of(database_url: str) -> None:
    env = {"CBSTOP_RATE_LIMIT": "100/60", "CBSTOP_AUTH_FAILURE_LIMIT": "20/60"}
    with running(database_url, workers=2, env=env) as server:
        wait_for_workers(server, 2)
        server.stop()
        stderr = server.stderr
    line = _startup(stderr)
    assert (line["rate_limit"], line["auth_failure_limit"]) == ("100/60", "20/60")
    assert (line["rate_limits_in"], line["max_in_flight"]) == ("memory", 128)
    assert "redis_at" not in line
    warned = [m for m in messages(stderr) if m["message"].startswith(PER_WORKER)]
    assert len(warned) == 1 and warned[0]["level"] == "warning", warned
    assert "CBSTOP_REDIS_URL" in warned[0]["message"]


def test_redis_is_named_without_its_password_and_one_worker_is_not_warned_of(
    database_url: str,
) -> None:
    # Nothing listens there: the server starts all the same (limits fail open).
    env = {
        "CBSTOP_RATE_LIMIT": "100/60",
        "CBSTOP_REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:1/3",
        "CBSTOP_MAX_IN_FLIGHT": "0",
    }
    with running(database_url, env=env) as server:
        server.stop()
        stderr = server.stderr
    line = _startup(stderr)
    assert (line["rate_limits_in"], line["redis_at"]) == ("redis", "127.0.0.1:1/3")
    assert (line["rate_limit"], line["auth_failure_limit"], line["max_in_flight"]) == (
        "100/60",
        "off",
        0,
    )
    assert PASSWORD not in stderr
    assert "rate limits are counted by each" not in stderr


def test_no_warning_when_both_limits_are_off(database_url: str) -> None:
    with running(database_url, workers=2) as server:
        wait_for_workers(server, 2)
        server.stop()
        stderr = server.stderr
    line = _startup(stderr)
    assert (line["rate_limit"], line["auth_failure_limit"]) == ("off", "off")
    assert "rate limits are counted by each" not in stderr


FORWARDED_IGNORED = "CBSTOP_FORWARDED_ALLOW_IPS is set but proxy headers are off"


@pytest.mark.parametrize(("proxy_headers", "warned"), [("false", True), ("true", False)])
def test_trusted_proxies_without_proxy_headers_are_warned_of(
    database_url: str, proxy_headers: str, warned: bool
) -> None:
    """Every client would share the proxy's address, and its one auth-failure budget."""
    env = {"CBSTOP_FORWARDED_ALLOW_IPS": "10.0.0.5", "CBSTOP_PROXY_HEADERS": proxy_headers}
    with running(database_url, env=env) as server:
        server.stop()
        stderr = server.stderr
    said = [m for m in messages(stderr) if m["message"].startswith(FORWARDED_IGNORED)]
    assert len(said) == (1 if warned else 0), said
    if warned:
        assert said[0]["level"] == "warning" and "CBSTOP_PROXY_HEADERS=true" in said[0]["message"]
