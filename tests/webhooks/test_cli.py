"""`cbstop webhooks add|list|remove|enable|deliveries`, run as the real command, both databases."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pytest

from cbstop.webhooks.signing import signing_key
from cbstop.world.loader import load_world
from tests.cli.run import cbstop
from tests.support import TEST_KEY_SECRET, execute_many, query, snapshot
from tests.world.worlds import base_world

ADDED = re.compile(
    r"^Added webhook endpoint (we_[0-9a-f]{16}) for (organisation|partner group) (\S+) "
    r"\((\S+), ([^)]*)\)\.$"
)
SECRET_LINE = re.compile(r"^whsec_[A-Za-z0-9+/]{43}=$")
MINUTE = 60_000_000  # microseconds
T0 = 1_796_000_000_000_000  # 2026-11-30T00:53:20Z in microseconds


def assert_one_line_error(result: Any, code: int, message: str) -> None:
    assert (result.returncode, result.stdout, result.stderr) == (
        code,
        "",
        f"cbstop: error: {message}\n",
    )


@pytest.fixture
def world(database_url: str) -> str:
    """The base world loaded: organisations org_a1…, partner groups pgrp_a_admin, pgrp_a_desk."""
    load_world(database_url, base_world(), key_secret=TEST_KEY_SECRET)
    return database_url


def add(database_url: str, *args: str) -> tuple[str, str, str, str, str, str]:
    """Run `webhooks add`; the id, owner kind, owner, URL, events and secret it printed."""
    result = cbstop("webhooks", "add", *args, "--database-url", database_url)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3, result.stdout
    match = ADDED.match(lines[0])
    assert match is not None, lines[0]
    assert lines[1] == "Its signing secret is shown only this once; give it to the receiver now:"
    assert SECRET_LINE.match(lines[2]), lines[2]
    return match[1], match[2], match[3], match[4], match[5], lines[2]


def endpoint_row(database_url: str, endpoint_id: str) -> list[tuple[Any, ...]]:
    return query(
        database_url,
        "SELECT organisation_id, partner_group_id, url, secret, event_types, status, "
        "disabled_reason FROM webhook_endpoints WHERE id = ?",
        endpoint_id,
    )


def add_endpoint_row(database_url: str, endpoint_id: str, **over: Any) -> None:
    row = {
        "id": endpoint_id,
        "organisation_id": "org_a1",
        "partner_group_id": None,
        "url": f"https://receiver.example/{endpoint_id}",
        "secret": "whsec_" + "A" * 43 + "=",
        "event_types": "",
        "status": "enabled",
        "disabled_reason": None,
        "created_at": T0,
    } | over
    execute_many(
        database_url,
        f"INSERT INTO webhook_endpoints ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
        [list(row.values())],
    )


def add_delivery(
    database_url: str,
    endpoint_id: str,
    event_id: str,
    state: str,
    attempts: Sequence[tuple[int, int | None, str | None]],
    next_attempt_at: int | None = None,
) -> None:
    """A delivery and its attempts: (minutes after T0, HTTP status, error) each."""
    execute_many(
        database_url,
        "INSERT INTO webhook_deliveries (endpoint_id, event_id, created_at, state, attempts, "
        "next_attempt_at) VALUES (?, ?, ?, ?, ?, ?)",
        [(endpoint_id, event_id, T0, state, len(attempts), next_attempt_at)],
    )
    execute_many(
        database_url,
        "INSERT INTO webhook_attempts (endpoint_id, event_id, attempt, started_at, duration_us, "
        "status_code, error, worker) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (endpoint_id, event_id, n, T0 + minutes * MINUTE, 12_345, status, error, "w1")
            for n, (minutes, status, error) in enumerate(attempts, start=1)
        ],
    )


# --- add --------------------------------------------------------------------------------------


def test_add_prints_the_id_and_secret_once_and_stores_an_enabled_endpoint(world: str) -> None:
    endpoint_id, kind, owner, url, events, secret = add(
        world, "--organisation", "org_a1", "--url", "https://receiver.example/hooks"
    )
    assert (kind, owner, url, events) == (
        "organisation",
        "org_a1",
        "https://receiver.example/hooks",
        "every event type",
    )
    assert len(signing_key(secret)) == 32
    assert endpoint_row(world, endpoint_id) == [
        ("org_a1", None, "https://receiver.example/hooks", secret, "", "enabled", None)
    ]


def test_add_for_a_partner_group_stores_its_event_types_sorted(world: str) -> None:
    endpoint_id, kind, owner, _, events, secret = add(
        world,
        "--partner-group",
        "pgrp_a_desk",
        "--url",
        "http://127.0.0.1:8080/in",
        "--event",
        "integration.updated",
        "--event",
        "integration.created",
    )
    assert (kind, owner, events) == (
        "partner group",
        "pgrp_a_desk",
        "integration.created, integration.updated",
    )
    assert endpoint_row(world, endpoint_id) == [
        (
            None,
            "pgrp_a_desk",
            "http://127.0.0.1:8080/in",
            secret,
            "integration.created integration.updated",
            "enabled",
            None,
        )
    ]


def test_each_endpoint_gets_its_own_id_and_secret(world: str) -> None:
    first = add(world, "--organisation", "org_a1", "--url", "https://a.example/")
    second = add(world, "--organisation", "org_a1", "--url", "https://a.example/")
    assert first[0] != second[0]
    assert first[5] != second[5]


URL = ["--url", "https://receiver.example/hooks"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (URL, 2, "give exactly one of --organisation and --partner-group"),
        (
            ["--organisation", "org_a1", "--partner-group", "pgrp_a_desk", *URL],
            2,
            "give exactly one of --organisation and --partner-group",
        ),
        (["--organisation", "org_nope", *URL], 1, "organisation org_nope does not exist"),
        (["--partner-group", "pgrp_nope", *URL], 1, "partner group pgrp_nope does not exist"),
        (
            ["--organisation", "org_a1", "--url", "ftp://receiver.example/"],
            2,
            "Invalid value for '--url': 'ftp://receiver.example/' is not an http:// or "
            "https:// URL with a host (see 'cbstop webhooks add --help')",
        ),
        (
            ["--organisation", "org_a1", "--url", "https:///no-host"],
            2,
            "Invalid value for '--url': 'https:///no-host' is not an http:// or https:// URL "
            "with a host (see 'cbstop webhooks add --help')",
        ),
        (
            ["--organisation", "org_a1", "--url", "receiver.example"],
            2,
            "Invalid value for '--url': 'receiver.example' is not an http:// or https:// URL "
            "with a host (see 'cbstop webhooks add --help')",
        ),
        (
            ["--organisation", "org_a1", "--url", "https://receiver.example/a b"],
            2,
            "Invalid value for '--url': the URL must not contain spaces or control characters "
            "(see 'cbstop webhooks add --help')",
        ),
        (
            ["--organisation", "org_a1", "--url", "https://receiver.example:99999/"],
            2,
            "Invalid value for '--url': 'https://receiver.example:99999/' is not a URL "
            "(see 'cbstop webhooks add --help')",
        ),
        (
            ["--organisation", "org_a1", *URL, "--event", "integration.deleted"],
            2,
            "Invalid value for '--event': unknown event type 'integration.deleted': choose "
            "from integration.created, integration.updated (see 'cbstop webhooks add --help')",
        ),
        (
            [*["--organisation", "org_a1", *URL], *["--event", "integration.created"] * 2],
            2,
            "Invalid value for '--event': event type integration.created is given twice "
            "(see 'cbstop webhooks add --help')",
        ),
    ],
    ids=[
        "no owner",
        "two owners",
        "unknown organisation",
        "unknown group",
        "ftp",
        "no host",
        "no scheme",
        "space",
        "bad port",
        "unknown event",
        "event twice",
    ],
)
def test_a_refused_add_is_one_line_and_changes_nothing(
    world: str, args: list[str], code: int, message: str
) -> None:
    before = snapshot(world)
    result = cbstop("webhooks", "add", *args, "--database-url", world)
    assert_one_line_error(result, code, message)
    assert snapshot(world) == before


# --- list -------------------------------------------------------------------------------------


def test_list_shows_every_endpoint_and_never_a_secret(world: str) -> None:
    org = add(world, "--organisation", "org_a1", "--url", "https://a.example/in")
    group = add(
        world,
        "--partner-group",
        "pgrp_a_admin",
        "--url",
        "https://b.example/in",
        "--event",
        "integration.created",
    )
    add_endpoint_row(
        world, "we_gone", status="disabled", disabled_reason="the receiver answered 410 Gone"
    )
    result = cbstop("webhooks", "list", "--database-url", world)
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "OWNER", "URL", "EVENTS", "CREATED", "STATUS"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert len(lines) == 4
    assert rows["we_gone"] == [
        "we_gone",
        "organisation",
        "org_a1",
        "https://receiver.example/we_gone",
        "all",
        "2026-11-30T00:53:20Z",
        "disabled",
        "(the",
        "receiver",
        "answered",
        "410",
        "Gone)",
    ]
    assert rows[org[0]][1:5] == ["organisation", "org_a1", "https://a.example/in", "all"]
    assert rows[group[0]][1:5] == [
        "partner_group",
        "pgrp_a_admin",
        "https://b.example/in",
        "integration.created",
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rows[org[0]][5])
    assert rows[org[0]][6:] == rows[group[0]][6:] == ["enabled"]
    assert org[5] not in result.stdout and group[5] not in result.stdout
    assert "whsec_" not in result.stdout


def test_list_of_no_endpoints_says_so(database_url: str) -> None:
    result = cbstop("webhooks", "list", "--database-url", database_url)
    assert (result.returncode, result.stdout, result.stderr) == (0, "No webhook endpoints.\n", "")


# --- remove -----------------------------------------------------------------------------------


def test_remove_deletes_the_endpoint_with_its_deliveries_and_attempts_only(world: str) -> None:
    add_endpoint_row(world, "we_gone")
    add_endpoint_row(world, "we_kept")
    for endpoint in ("we_gone", "we_kept"):
        add_delivery(world, endpoint, "evt_1", "delivered", [(0, 500, None), (1, 200, None)])
        add_delivery(world, endpoint, "evt_2", "pending", [(2, None, "timeout")], T0)
    before = snapshot(world)
    result = cbstop("webhooks", "remove", "we_gone", "--database-url", world)
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "Removed webhook endpoint we_gone.\n",
        "",
    )
    after = snapshot(world)
    for table in ("webhook_endpoints", "webhook_deliveries", "webhook_attempts"):
        assert after[table] == [row for row in before[table] if row[0] != "we_gone"], table
        assert len(after[table]) < len(before[table])
    assert {t: rows for t, rows in after.items() if not t.startswith("webhook_")} == {
        t: rows for t, rows in before.items() if not t.startswith("webhook_")
    }


def test_remove_of_an_unknown_endpoint_is_one_line_and_changes_nothing(world: str) -> None:
    add_endpoint_row(world, "we_kept")
    add_delivery(world, "we_kept", "evt_1", "delivered", [(0, 200, None)])
    before = snapshot(world)
    result = cbstop("webhooks", "remove", "we_nope", "--database-url", world)
    assert_one_line_error(result, 1, "webhook endpoint we_nope does not exist")
    assert snapshot(world) == before


# --- enable -----------------------------------------------------------------------------------


def test_enable_sends_to_an_endpoint_its_receiver_disabled_again(world: str) -> None:
    add_endpoint_row(world, "we_gone", status="disabled", disabled_reason="HTTP 410 Gone")
    add_endpoint_row(world, "we_other", status="disabled", disabled_reason="HTTP 410 Gone")
    add_delivery(world, "we_gone", "evt_1", "cancelled", [(0, 410, None)])
    before = snapshot(world)
    result = cbstop("webhooks", "enable", "we_gone", "--database-url", world)
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "Enabled webhook endpoint we_gone.\n",
        "",
    )
    assert endpoint_row(world, "we_gone")[0][5:] == ("enabled", None)
    after = snapshot(world)
    assert [r for r in after["webhook_endpoints"] if r[0] != "we_gone"] == [
        r for r in before["webhook_endpoints"] if r[0] != "we_gone"
    ]
    assert {t: r for t, r in after.items() if t != "webhook_endpoints"} == {
        t: r for t, r in before.items() if t != "webhook_endpoints"
    }
    again = cbstop("webhooks", "enable", "we_gone", "--database-url", world)
    assert (again.returncode, again.stdout) == (
        0,
        "Webhook endpoint we_gone was already enabled.\n",
    )
    assert snapshot(world) == after


def test_enable_of_an_unknown_endpoint_is_one_line_and_changes_nothing(world: str) -> None:
    before = snapshot(world)
    result = cbstop("webhooks", "enable", "we_nope", "--database-url", world)
    assert_one_line_error(result, 1, "webhook endpoint we_nope does not exist")
    assert snapshot(world) == before


# --- deliveries -------------------------------------------------------------------------------


def deliveries(database_url: str, *args: str) -> list[list[str]]:
    result = cbstop("webhooks", "deliveries", *args, "--database-url", database_url)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "TIME",
        "ENDPOINT",
        "EVENT",
        "ATTEMPT",
        "DURATION",
        "STATE",
        "NEXT",
        "RESULT",
    ]
    return [line.split(maxsplit=7) for line in lines[1:]]


@pytest.fixture
def attempts(world: str) -> str:
    """Two endpoints' deliveries in every state, their attempts a minute apart or more."""
    add_endpoint_row(world, "we_one")
    add_endpoint_row(world, "we_two", organisation_id="org_a2")
    add_delivery(world, "we_one", "evt_ok", "delivered", [(0, 503, None), (5, 204, None)])
    add_delivery(
        world,
        "we_one",
        "evt_wait",
        "pending",
        [(1, None, "timed out after 10 s")],
        T0 + 30 * MINUTE,
    )
    add_delivery(world, "we_two", "evt_dead", "failed", [(2, 500, None)])
    add_delivery(world, "we_two", "evt_off", "cancelled", [(3, 410, None)])
    return world


def test_deliveries_lists_the_most_recent_attempts_newest_first_with_their_state(
    attempts: str,
) -> None:
    ms = "12ms"  # 12,345 µs
    assert deliveries(attempts) == [
        ["2026-11-30T00:58:20Z", "we_one", "evt_ok", "2", ms, "delivered", "-", "HTTP 204"],
        ["2026-11-30T00:56:20Z", "we_two", "evt_off", "1", ms, "cancelled", "-", "HTTP 410"],
        ["2026-11-30T00:55:20Z", "we_two", "evt_dead", "1", ms, "failed", "-", "HTTP 500"],
        [
            "2026-11-30T00:54:20Z",
            "we_one",
            "evt_wait",
            "1",
            ms,
            "pending",
            "2026-11-30T01:23:20Z",
            "timed out after 10 s",
        ],
        ["2026-11-30T00:53:20Z", "we_one", "evt_ok", "1", ms, "delivered", "-", "HTTP 503"],
    ]


def test_deliveries_of_one_endpoint_shows_only_its_attempts(attempts: str) -> None:
    assert [(r[1], r[2], r[3]) for r in deliveries(attempts, "we_two")] == [
        ("we_two", "evt_off", "1"),
        ("we_two", "evt_dead", "1"),
    ]


def test_deliveries_limit_keeps_the_newest(attempts: str) -> None:
    assert [(r[2], r[3]) for r in deliveries(attempts, "--limit", "2")] == [
        ("evt_ok", "2"),
        ("evt_off", "1"),
    ]
    assert [(r[2], r[3]) for r in deliveries(attempts, "we_one", "--limit", "1")] == [
        ("evt_ok", "2")
    ]


def test_deliveries_with_none_says_so(world: str) -> None:
    add_endpoint_row(world, "we_quiet")
    for args in ((), ("we_quiet",)):
        result = cbstop("webhooks", "deliveries", *args, "--database-url", world)
        assert (result.returncode, result.stdout, result.stderr) == (
            0,
            "No delivery attempts.\n",
            "",
        )


def test_deliveries_of_an_unknown_endpoint_is_one_line(attempts: str) -> None:
    result = cbstop("webhooks", "deliveries", "we_nope", "--database-url", attempts)
    assert_one_line_error(result, 1, "webhook endpoint we_nope does not exist")
