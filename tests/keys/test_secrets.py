"""Key secrets, expiry and last use (CONTRACT 3.6), through real `cbstop` processes on both
databases: several secrets with re-hash on use, the stored fingerprint that makes `serve`,
`keys create` and `load` refuse a secret that made none of the keys, `--expires-in`, and the
last use kept to the minute by the background writer."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from cbstop.auth.keys import hash_key, secret_fingerprint
from cbstop.auth.upkeep import minute_of
from cbstop.world.loader import load_world
from tests.integrations.helpers import secret, world
from tests.reliability.processes import cbstop, envelope_code, free_port, running
from tests.support import TEST_KEY_SECRET, query, snapshot

pytestmark = pytest.mark.xdist_group("servers")

OLD = TEST_KEY_SECRET
NEW = "the-newest-key-secret-0123456789"
OTHER = "a-secret-that-made-no-key-0123456"
UNAUTHORISED = {
    "errors": [{"code": "UNAUTHORISED", "message": "Unauthorised"}],
}
FAST = {"CBSTOP_KEY_LAST_USED_INTERVAL": "0.2"}
KEYS = "SELECT id, key_hash, secret_fingerprint FROM api_keys ORDER BY id"


def execute(database_url: str, sql: str, *params: Any) -> None:
    """Run one write with `?` parameters on either database, committed."""
    if database_url.startswith("sqlite:///"):
        with closing(sqlite3.connect(database_url[len("sqlite:///") :])) as conn, conn:
            conn.execute(sql, params)
        return
    with psycopg.connect(database_url) as pg:
        pg.execute(sql.replace("?", "%s"), params)


def now_micros() -> int:
    return time.time_ns() // 1000


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def eventually(check: Callable[[], bool], timeout: float = 15.0) -> None:
    """Wait until `check()` holds (AssertionError past `timeout`)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.05)


def loaded(database_url: str, key_secret: str = OLD) -> dict[str, Any]:
    matrix = world("matrix")
    load_world(database_url, matrix, key_secret=key_secret)
    return matrix


def world_file(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "world.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def mismatch_line(keys: int, stored: str, configured: str) -> str:
    return (
        f"cbstop: error: CBSTOP_KEY_SECRET does not match the stored keys: {keys} live keys were "
        f"hashed with a secret of fingerprint {stored}, the configured secrets have {configured}; "
        "set the secret the keys were made with (docs/production.md, 'Rotating the key secret')\n"
    )


# --- several secrets ------------------------------------------------------------------------


def test_a_key_of_an_older_secret_works_and_is_rehashed_with_the_newest_on_use(
    database_url: str,
) -> None:
    matrix = loaded(database_url)
    org_key = secret(matrix, "key_org_a1")
    before = dict((r[0], r[1:]) for r in query(database_url, KEYS))
    env = {"CBSTOP_KEY_SECRET": f"{NEW},{OLD}", **FAST}
    with running(database_url, env=env) as server, httpx.Client(base_url=server.url) as client:
        first = client.get("/v1/integrations", headers=bearer(org_key))
        assert first.status_code == 200, first.text
        moved = (hash_key(NEW, org_key), secret_fingerprint(NEW))
        eventually(
            lambda: (
                query(database_url, KEYS.replace("ORDER BY id", "WHERE id = ?"), "key_org_a1")
                == [("key_org_a1", *moved)]
            )
        )
        # Found under the newest secret's hash now, with the same answer.
        again = client.get("/v1/integrations", headers=bearer(org_key))
        assert (again.status_code, again.json()) == (200, first.json())
    after = dict((r[0], r[1:]) for r in query(database_url, KEYS))
    assert after == {**before, "key_org_a1": moved}
    assert before["key_org_a1"] == (hash_key(OLD, org_key), secret_fingerprint(OLD))


def test_unknown_malformed_revoked_and_other_secret_keys_are_all_401_with_several_secrets(
    database_url: str,
) -> None:
    matrix = loaded(database_url)
    before = snapshot(database_url)
    stranger = "cbs_" + "x" * 43
    refused = [
        bearer(stranger),
        bearer("short"),
        {"Authorization": "Basic abc"},
        {},
        bearer(secret(matrix, "key_revoked_a1")),
    ]
    env = {"CBSTOP_KEY_SECRET": f"{NEW},{OLD}", **FAST}
    with running(database_url, env=env) as server, httpx.Client(base_url=server.url) as client:
        for headers in refused:
            answer = client.get("/v1/integrations", headers=headers)
            assert (answer.status_code, answer.json()) == (401, UNAUTHORISED), headers
            assert envelope_code(answer) == "UNAUTHORISED"
    # A key hashed with a secret the server does not hold is a stranger too.
    with running(database_url, env={"CBSTOP_KEY_SECRET": f"{NEW},{OTHER},{OLD}"}) as server:
        key = secret(matrix, "key_org_a1")
        assert httpx.get(server.url + "/v1/integrations", headers=bearer(key)).status_code == 200
    # Nothing was re-hashed or marked used for a refused key: only the key that worked moved.
    after = snapshot(database_url)
    assert {k: v for k, v in after.items() if k != "api_keys"} == {
        k: v for k, v in before.items() if k != "api_keys"
    }
    others = [r for r in after["api_keys"] if r[0] != "key_org_a1"]
    assert others == [r for r in before["api_keys"] if r[0] != "key_org_a1"]
    assert query(database_url, "SELECT id FROM api_keys WHERE last_used_at IS NOT NULL") == [
        ("key_org_a1",)
    ]


# --- the stored fingerprint -----------------------------------------------------------------


def test_keys_create_load_and_serve_refuse_a_secret_that_made_none_of_the_keys(
    database_url: str, tmp_path: Path
) -> None:
    matrix = loaded(database_url)
    live = sum(1 for k in matrix["api_keys"] if not k.get("revoked"))
    before = snapshot(database_url)
    line = mismatch_line(live, secret_fingerprint(OLD), secret_fingerprint(OTHER))
    url = ["--database-url", database_url]
    created = cbstop(["keys", "create", "--organisation", "org_a1", *url], CBSTOP_KEY_SECRET=OTHER)
    more = world("matrix")
    more["api_keys"] = [{**more["api_keys"][0], "id": "key_more", "secret": "cbs_" + "m" * 40}]
    path = world_file(tmp_path, more)
    load = cbstop(["load", str(path), *url], CBSTOP_KEY_SECRET=OTHER)
    port = str(free_port())
    serve = cbstop(["serve", "--port", port, *url], CBSTOP_KEY_SECRET=OTHER)
    for result in (created, load, serve):
        assert (result.returncode, result.stdout, result.stderr) == (1, "", line), result.args
    assert snapshot(database_url) == before
    # Listed second (accepted, not yet hashing with it), the old secret is enough.
    both = f"{OTHER},{OLD}"
    assert cbstop(["load", str(path), *url], CBSTOP_KEY_SECRET=both).returncode == 0
    assert query(database_url, KEYS.replace("ORDER BY id", "WHERE id = ?"), "key_more") == [
        ("key_more", hash_key(OTHER, "cbs_" + "m" * 40), secret_fingerprint(OTHER))
    ]


def test_revoked_and_expired_keys_do_not_hold_a_secret_back(database_url: str) -> None:
    loaded(database_url)
    execute(database_url, "UPDATE api_keys SET revoked = ?, revoked_at = ?", True, 1)
    url = ["--database-url", database_url]
    created = cbstop(["keys", "create", "--organisation", "org_a1", *url], CBSTOP_KEY_SECRET=NEW)
    assert (created.returncode, created.stderr) == (0, ""), created.stderr


def test_keys_stored_before_fingerprints_are_not_counted_and_get_theirs_on_use(
    database_url: str,
) -> None:
    matrix = loaded(database_url)
    execute(database_url, "UPDATE api_keys SET secret_fingerprint = NULL")
    url = ["--database-url", database_url]
    listed = cbstop(["keys", "list", *url])
    live = sum(1 for k in matrix["api_keys"] if not k.get("revoked"))
    summary = listed.stdout.splitlines()[-1].split()
    assert summary[:3] == ["?", str(live), "unknown:"], listed.stdout
    # Nothing says which secret made them, so nothing is refused.
    refused_nothing = cbstop(["keys", "list", *url], CBSTOP_KEY_SECRET=OTHER)
    assert refused_nothing.returncode == 0
    key = secret(matrix, "key_org_a1")
    with running(database_url, env=FAST) as server:
        assert httpx.get(server.url + "/v1/integrations", headers=bearer(key)).status_code == 200
        eventually(
            lambda: (
                query(
                    database_url,
                    "SELECT secret_fingerprint FROM api_keys WHERE id = ?",
                    "key_org_a1",
                )
                == [(secret_fingerprint(OLD),)]
            )
        )
    assert query(database_url, "SELECT key_hash FROM api_keys WHERE id = ?", "key_org_a1") == [
        (hash_key(OLD, key),)
    ]
    # Now one key says which secret made them: another secret is refused.
    refused = cbstop(["keys", "create", "--organisation", "org_a1", *url], CBSTOP_KEY_SECRET=OTHER)
    assert (refused.returncode, refused.stderr) == (
        1,
        mismatch_line(1, secret_fingerprint(OLD), secret_fingerprint(OTHER)).replace(
            "1 live keys were", "1 live key was"
        ),
    )


# --- expiry ---------------------------------------------------------------------------------

CREATED = re.compile(
    r"^Created key (key_[0-9a-f]{16}) for organisation org_a1 "
    r"\(integrations:read, integrations:write, expires (\d{4}-\d\d-\d\dT\d\d:\d\dZ)\)\.$"
)


def test_a_key_created_with_expires_in_works_until_then_and_is_401_after(
    database_url: str,
) -> None:
    loaded(database_url)
    url = ["--database-url", database_url]
    started = now_micros()
    created = cbstop(["keys", "create", "--organisation", "org_a1", "--expires-in", "3s", *url])
    assert created.returncode == 0, created.stderr
    lines = created.stdout.splitlines()
    match = CREATED.match(lines[0])
    assert match is not None, lines[0]
    key_id, key = match[1], lines[2]
    [(expires_at,)] = query(database_url, "SELECT expires_at FROM api_keys WHERE id = ?", key_id)
    assert started + 3_000_000 <= expires_at <= now_micros() + 3_000_000
    listed = cbstop(["keys", "list", *url])
    row = next(line.split() for line in listed.stdout.splitlines() if line.startswith(key_id))
    assert row[5] == match[2]
    with running(database_url) as server, httpx.Client(base_url=server.url) as client:
        while now_micros() < expires_at - 1_000_000:
            assert client.get("/v1/integrations", headers=bearer(key)).status_code == 200
            time.sleep(0.1)
        time.sleep(max(0.0, (expires_at - now_micros()) / 1e6))
        # The cached answer does not outlive the expiry: refused at once, like a stranger.
        answer = client.get("/v1/integrations", headers=bearer(key))
        assert (answer.status_code, answer.json()) == (401, UNAUTHORISED)
    # An expired key is not live: it is not counted for any secret.
    summary = cbstop(["keys", "list", *url]).stdout.splitlines()[-1].split()
    assert summary[:2] == [secret_fingerprint(TEST_KEY_SECRET), "9"]


@pytest.mark.parametrize("value", ["90", "d", "0d", "1w", "-5m", "1.5h", "", "12 h", "10D"])
def test_keys_create_with_a_bad_duration_is_a_usage_error_and_writes_nothing(
    database_url: str, value: str
) -> None:
    loaded(database_url)
    before = snapshot(database_url)
    args = ["keys", "create", "--organisation", "org_a1", "--expires-in", value]
    result = cbstop([*args, "--database-url", database_url])
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"cbstop: error: Invalid value for '--expires-in': {value!r} is not a duration: a whole "
        "number and d, h, m or s, like 90d, 12h, 30m, 45s (see 'cbstop keys create --help')\n"
    )
    assert snapshot(database_url) == before


# --- last use -------------------------------------------------------------------------------


def test_last_use_is_kept_to_the_minute_and_written_by_the_background_writer(
    database_url: str,
) -> None:
    matrix = loaded(database_url)
    key = secret(matrix, "key_admin_a")
    last_used = "SELECT id, last_used_at FROM api_keys WHERE last_used_at IS NOT NULL"
    with running(database_url, env=FAST) as server:
        started = now_micros()
        for _ in range(3):
            assert (
                httpx.get(server.url + "/v1/integrations", headers=bearer(key)).status_code == 200
            )
        ended = now_micros()
        # Written while the server runs: by the background writer, not at shutdown.
        eventually(lambda: query(database_url, last_used) != [])
        [(key_id, minute)] = query(database_url, last_used)
    assert key_id == "key_admin_a"
    assert minute % 60_000_000 == 0
    assert minute_of(started) <= minute <= minute_of(ended)
    listed = cbstop(["keys", "list", "--database-url", database_url])
    row = next(line.split() for line in listed.stdout.splitlines() if line.startswith(key_id))
    stamp = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(minute / 1e6))
    assert row[5:7] == ["never", stamp]


def test_last_use_not_yet_written_is_written_when_the_server_stops(database_url: str) -> None:
    matrix = loaded(database_url)
    key = secret(matrix, "key_org_d")
    last_used = "SELECT id, last_used_at FROM api_keys WHERE last_used_at IS NOT NULL"
    with running(database_url, env={"CBSTOP_KEY_LAST_USED_INTERVAL": "3600"}) as server:
        started = now_micros()
        assert httpx.get(server.url + "/v1/integrations", headers=bearer(key)).status_code == 200
        ended = now_micros()
        time.sleep(0.5)
        assert query(database_url, last_used) == []  # not on the request path
    [(key_id, minute)] = query(database_url, last_used)
    assert key_id == "key_org_d"
    assert minute_of(started) <= minute <= minute_of(ended)
