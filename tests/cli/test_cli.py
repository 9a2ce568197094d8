"""The `cbstop` command as an operator runs it: exit codes, one-line errors, keys shown once."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from cbstop.auth.keys import hash_key, secret_fingerprint
from tests.cli.run import cbstop, start_cbstop
from tests.db.test_migrations import HEAD
from tests.support import TEST_KEY_SECRET, query, snapshot
from tests.world.worlds import SECRETS, base_world

KEY_LINE = re.compile(r"^cbs_[A-Za-z0-9_-]{43}$")
CREATED = re.compile(
    r"^Created key (key_[0-9a-f]{16}) for (organisation|partner group) (\S+) \(([^)]*)\)\.$"
)


def world_file(tmp_path: Path, world: dict[str, Any] | None = None) -> Path:
    path = tmp_path / "world.json"
    path.write_text(json.dumps(base_world() if world is None else world), encoding="utf-8")
    return path


def assert_one_line_error(result: Any, code: int, message: str) -> None:
    assert (result.returncode, result.stdout, result.stderr) == (
        code,
        "",
        f"cbstop: error: {message}\n",
    )


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--help"],
        ["serve", "--help"],
        ["migrate", "--help"],
        ["load", "--help"],
        ["keys"],
        ["keys", "--help"],
        ["keys", "create", "--help"],
        ["keys", "revoke", "--help"],
        ["keys", "list", "--help"],
        ["webhooks"],
        ["webhooks", "--help"],
        ["webhooks", "add", "--help"],
        ["webhooks", "list", "--help"],
        ["webhooks", "remove", "--help"],
        ["webhooks", "enable", "--help"],
        ["webhooks", "deliveries", "--help"],
    ],
    ids=lambda args: " ".join(args) or "bare",
)
def test_help_is_shown_and_exits_0(args: list[str]) -> None:
    result = cbstop(*args)
    assert result.returncode == 0, result.stderr
    assert "Usage: cbstop" in result.stdout
    assert result.stderr == ""


def test_help_lists_every_command() -> None:
    out = cbstop("--help").stdout
    for command in ("serve", "migrate", "load", "keys", "webhooks"):
        assert re.search(rf"│ {command} ", out), out


def test_migrate_reports_the_revision(database_url: str) -> None:
    result = cbstop("migrate", "--database-url", database_url)
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"Database is at revision {HEAD}.\n",
        "",
    )


def test_database_url_defaults_to_the_environment_then_cbstop_db(tmp_path: Path) -> None:
    result = cbstop("migrate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cbstop.db").is_file()
    other = tmp_path / "other.db"
    result = cbstop("migrate", cwd=tmp_path, CBSTOP_DATABASE_URL=f"sqlite:///{other}")
    assert result.returncode == 0, result.stderr
    assert other.is_file()


def test_load_adds_a_world_then_finds_nothing_new(database_url: str, tmp_path: Path) -> None:
    path = world_file(tmp_path)
    first = cbstop("load", str(path), "--database-url", database_url)
    assert (first.returncode, first.stderr) == (0, "")
    assert first.stdout.startswith(f"Loaded {path}: added partners 2, organisations 4, ")
    assert query(database_url, "SELECT count(*) FROM integrations") == [(5,)]
    before = snapshot(database_url)
    again = cbstop("load", str(path), "--database-url", database_url)
    assert (again.returncode, again.stderr) == (0, "")
    assert again.stdout.startswith(f"Loaded {path}: nothing new; 23 entries already present (")
    assert snapshot(database_url) == before


def test_load_works_on_a_fresh_database(empty_database_url: str, tmp_path: Path) -> None:
    result = cbstop("load", str(world_file(tmp_path)), "--database-url", empty_database_url)
    assert (result.returncode, result.stderr) == (0, "")
    assert query(empty_database_url, "SELECT count(*) FROM api_keys") == [(5,)]


def test_load_of_a_bad_world_is_one_line_and_writes_nothing(
    database_url: str, tmp_path: Path
) -> None:
    world = base_world()
    world["partner_groups"][1]["organisation_ids"] = ["org_b1"]
    before = snapshot(database_url)
    result = cbstop("load", str(world_file(tmp_path, world)), "--database-url", database_url)
    assert_one_line_error(
        result,
        1,
        "partner_groups[1] (pgrp_a_desk): organisation org_b1 belongs to ptr_b, "
        "not to the group's partner ptr_a",
    )
    assert snapshot(database_url) == before


def test_load_of_invalid_json_is_one_line(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "world.json"
    path.write_text('{"partners": [', encoding="utf-8")
    result = cbstop("load", str(path), "--database-url", database_url)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith(f"cbstop: error: {path} is not valid JSON: ")
    assert result.stderr.count("\n") == 1


def test_load_of_a_missing_file_is_one_line(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    result = cbstop("load", str(path), "--database-url", database_url)
    assert_one_line_error(result, 1, f"world file {path} does not exist")


def _create(database_url: str, *args: str) -> tuple[str, str, str, str]:
    """Run `keys create`; the key id, owner kind, owner and secret it printed."""
    result = cbstop("keys", "create", *args, "--database-url", database_url)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3, result.stdout
    match = CREATED.match(lines[0])
    assert match is not None, lines[0]
    assert lines[1] == "Its secret is shown only this once; store it now:"
    assert KEY_LINE.match(lines[2]), lines[2]
    return match[1], match[2], match[3], lines[2]


def test_keys_create_prints_the_key_once_and_stores_only_its_hash(
    database_url: str, tmp_path: Path
) -> None:
    cbstop("load", str(world_file(tmp_path)), "--database-url", database_url)
    key_id, kind, owner, secret = _create(database_url, "--organisation", "org_a1")
    assert (kind, owner) == ("organisation", "org_a1")
    row = query(
        database_url,
        "SELECT key_hash, organisation_id, partner_group_id, abilities, revoked FROM api_keys "
        "WHERE id = ?",
        key_id,
    )
    assert [(r[0], r[1], r[2], r[3], bool(r[4])) for r in row] == [
        (
            hash_key(TEST_KEY_SECRET, secret),
            "org_a1",
            None,
            "integrations:read integrations:write",
            False,
        )
    ]
    listed = cbstop("keys", "list", "--database-url", database_url)
    assert listed.returncode == 0
    assert key_id in listed.stdout
    assert secret not in listed.stdout
    assert hash_key(TEST_KEY_SECRET, secret) not in listed.stdout
    assert not any(s in listed.stdout for s in SECRETS)


def test_keys_create_with_abilities_grants_exactly_those(database_url: str, tmp_path: Path) -> None:
    cbstop("load", str(world_file(tmp_path)), "--database-url", database_url)
    key_id, kind, owner, _ = _create(
        database_url, "--partner-group", "pgrp_a_desk", "--ability", "integrations:read"
    )
    assert (kind, owner) == ("partner group", "pgrp_a_desk")
    assert query(database_url, "SELECT abilities FROM api_keys WHERE id = ?", key_id) == [
        ("integrations:read",)
    ]


def test_keys_list_shows_owner_abilities_expiry_last_use_revocation_and_secret(
    database_url: str, tmp_path: Path
) -> None:
    cbstop("load", str(world_file(tmp_path)), "--database-url", database_url)
    result = cbstop("keys", "list", "--database-url", database_url)
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "ID",
        "OWNER",
        "ABILITIES",
        "CREATED",
        "EXPIRES",
        "LAST_USED",
        "REVOKED",
        "SECRET",
    ]
    table = lines[1 : lines.index("")]
    rows = {line.split()[0]: line.split() for line in table}
    assert len(rows) == len(base_world()["api_keys"])
    assert rows["key_read_a1"][1:4] == ["organisation", "org_a1", "integrations:read"]
    assert rows["key_admin_a"][1:4] == [
        "partner_group",
        "pgrp_a_admin",
        "integrations:read,integrations:write",
    ]
    fingerprint = secret_fingerprint(TEST_KEY_SECRET)
    assert rows["key_org_a1"][5:] == ["never", "never", "-", fingerprint]
    assert rows["key_revoked_a1"][-1] == fingerprint
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rows["key_revoked_a1"][-2])
    live = sum(1 for k in base_world()["api_keys"] if not k.get("revoked"))
    summary = lines[lines.index("") + 1 :]
    assert summary[0] == "Live keys (not revoked, not expired) per key secret:"
    assert [line.split() for line in summary[1:]] == [
        ["SECRET", "KEYS"],
        [fingerprint, str(live), "CBSTOP_KEY_SECRET", "#1", "(newest)"],
    ]


def test_keys_list_of_an_empty_database(database_url: str) -> None:
    result = cbstop("keys", "list", "--database-url", database_url)
    assert (result.returncode, result.stdout, result.stderr) == (0, "No keys.\n", "")


def test_keys_revoke_revokes_and_a_second_revoke_changes_nothing(
    database_url: str, tmp_path: Path
) -> None:
    cbstop("load", str(world_file(tmp_path)), "--database-url", database_url)
    result = cbstop("keys", "revoke", "key_org_a1", "--database-url", database_url)
    assert (result.returncode, result.stdout, result.stderr) == (0, "Revoked key key_org_a1.\n", "")
    sql = "SELECT revoked, revoked_at FROM api_keys WHERE id = ?"
    [(revoked, revoked_at)] = query(database_url, sql, "key_org_a1")
    assert bool(revoked) and revoked_at is not None
    before = snapshot(database_url)
    again = cbstop("keys", "revoke", "key_org_a1", "--database-url", database_url)
    assert (again.returncode, again.stdout, again.stderr) == (0, "Revoked key key_org_a1.\n", "")
    assert snapshot(database_url) == before


def test_keys_revoke_of_an_unknown_key_is_an_error(database_url: str) -> None:
    result = cbstop("keys", "revoke", "key_nope", "--database-url", database_url)
    assert_one_line_error(result, 1, "key key_nope does not exist")


def test_keys_create_for_an_unknown_organisation_is_an_error(database_url: str) -> None:
    before = snapshot(database_url)
    result = cbstop("keys", "create", "--organisation", "org_nope", "--database-url", database_url)
    assert_one_line_error(result, 1, "organisation org_nope does not exist")
    assert snapshot(database_url) == before


def test_keys_create_for_an_unknown_partner_group_is_an_error(database_url: str) -> None:
    result = cbstop(
        "keys", "create", "--partner-group", "pgrp_nope", "--database-url", database_url
    )
    assert_one_line_error(result, 1, "partner group pgrp_nope does not exist")


@pytest.mark.parametrize(
    "owner", [[], ["--organisation", "org_a1", "--partner-group", "pgrp_a_desk"]]
)
def test_keys_create_needs_exactly_one_owner(owner: list[str]) -> None:
    result = cbstop("keys", "create", *owner)
    assert_one_line_error(result, 2, "give exactly one of --organisation and --partner-group")


def test_an_unknown_ability_is_a_usage_error() -> None:
    result = cbstop("keys", "create", "--organisation", "org_a1", "--ability", "integrations:all")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("cbstop: error: Invalid value for '--ability': ")
    assert result.stderr.endswith("(see 'cbstop keys create --help')\n")
    assert result.stderr.count("\n") == 1


def test_an_unknown_command_is_a_usage_error() -> None:
    result = cbstop("bogus")
    assert_one_line_error(result, 2, "No such command 'bogus'. (see 'cbstop --help')")


def test_an_unsupported_database_url_is_one_line() -> None:
    result = cbstop("keys", "list", "--database-url", "mysql://db/cbstop")
    assert_one_line_error(
        result,
        1,
        "unsupported database URL 'mysql://db/cbstop': use postgresql://user@host:port/db "
        "or sqlite:///path/to/file.db",
    )


@pytest.mark.parametrize("command", [["migrate"], ["keys", "list"], ["load", "world.json"]])
def test_an_unreachable_database_is_one_line(command: list[str], tmp_path: Path) -> None:
    world_file(tmp_path)
    result = cbstop(
        *command, "--database-url", "postgresql://postgres@127.0.0.1:1/cbstop", cwd=tmp_path
    )
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith("cbstop: error: the database is not available: ")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_serve_refuses_demo_with_a_database_url() -> None:
    result = cbstop("serve", "--demo", "--database-url", "sqlite:///x.db")
    assert_one_line_error(result, 2, "--demo uses its own database: leave out --database-url")


def test_a_bad_setting_in_the_environment_is_one_line(database_url: str) -> None:
    result = cbstop("keys", "list", "--database-url", database_url, CBSTOP_POOL_MAX_SIZE="0")
    assert_one_line_error(
        result,
        1,
        "invalid setting pool_max_size (CBSTOP_POOL_MAX_SIZE): "
        "Input should be greater than or equal to 1",
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_up(base: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            httpx.get(f"{base}/healthz", timeout=1).raise_for_status()
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("the demo server did not start")


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_serve_demo_prints_keys_and_a_curl_line_that_works_as_printed() -> None:
    port = _free_port()
    process = start_cbstop("serve", "--demo", "--port", str(port))
    try:
        assert process.stdout is not None
        banner = [process.stdout.readline() for _ in range(11)]
        _wait_until_up(f"http://127.0.0.1:{port}", process)
        curl = next(line.strip() for line in banner if line.strip().startswith("curl "))
        assert curl == (
            'curl -H "Authorization: Bearer cbs_demo_org_xyz456_key" '
            f"http://127.0.0.1:{port}/v1/integrations"
        )
        for secret in ("cbs_demo_org_xyz456_key", "cbs_demo_partner_admin_key"):
            assert f"  {secret}\n" in banner
        answer = subprocess.run(
            [*shlex.split(curl), "-s"], capture_output=True, text=True, timeout=30, check=True
        )
        body = json.loads(answer.stdout)
        assert [i["id"] for i in body["items"]] == ["int_abc123", "int_def789"]
        directory = Path(banner[0].rsplit(" ", 1)[1].strip())
        assert (directory / "demo.db").is_file()
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 0
    assert not directory.exists()
