"""Key handling and what the service lets out: keys stored only as HMACs, one 401 for every
bad key, revocation within 1 s, production refusing the placeholder secret, no key material
in logs, no caching of tenant answers, and no stack trace or SQL in any answer."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from typing import Any

import httpx
import pytest

from cbstop.auth.keys import hash_key
from cbstop.settings import PLACEHOLDER_KEY_SECRET
from cbstop.world.loader import load_world
from tests.integrations.helpers import secret, world
from tests.reliability.processes import (
    CBSTOP,
    REPO,
    RevocationWatch,
    base_env,
    cbstop,
    free_port,
    running,
)
from tests.support import TEST_KEY_SECRET, api_client, query, snapshot

ITEM = "/v1/integrations/int_a1_orders"
UNKNOWN = "cbs_never_issued_0000000000000000000000"


def test_keys_are_stored_only_as_hmacs_under_the_server_secret(database_url: str) -> None:
    matrix = world("matrix")
    load_world(database_url, matrix, key_secret=TEST_KEY_SECRET)
    stored = dict(query(database_url, "SELECT id, key_hash FROM api_keys"))
    assert stored == {k["id"]: hash_key(TEST_KEY_SECRET, k["secret"]) for k in matrix["api_keys"]}
    everything = repr(snapshot(database_url))
    for key in matrix["api_keys"]:
        assert key["secret"] not in everything


def test_unknown_malformed_and_revoked_keys_get_the_identical_401(database_url: str) -> None:
    matrix = world("matrix")
    valid = secret(matrix, "key_org_a1")
    headers: list[dict[str, str]] = [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer    "},
        {"Authorization": f"Basic {valid}"},
        {"Authorization": f"Token {valid}"},
        {"Authorization": f"Bearer {valid} extra"},
        {"Authorization": f"Bearer {valid[:-1]}"},
        {"Authorization": f"Bearer {valid.upper()}"},
        {"Authorization": f"Bearer {UNKNOWN}"},
        {"Authorization": "Bearer " + "x" * 600},
        {"Authorization": f"Bearer {secret(matrix, 'key_revoked_a1')}"},
    ]
    with api_client(database_url, matrix) as client:
        answers = [client.get(ITEM, headers=h) for h in headers]

    def shape(answer: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
        kept = {k: v for k, v in answer.headers.items() if k != "x-request-id"}
        return answer.status_code, answer.content, kept

    first = shape(answers[0])
    assert first[0] == 401
    assert first[2]["www-authenticate"] == "Bearer"
    assert [shape(a) for a in answers] == [first] * len(answers)


def test_tenant_answers_are_never_cached(database_url: str) -> None:
    matrix = world("matrix")
    auth = {"Authorization": f"Bearer {secret(matrix, 'key_org_a1')}"}
    body = {
        "organisation_id": "org_a1",
        "name": "n",
        "type": "CUSTOM_ORDERS",
        "merchant_ids": ["mrch_a1_1"],
    }
    with api_client(database_url, matrix) as client:
        answers = [
            client.get("/v1/integrations", headers=auth),
            client.get(ITEM, headers=auth),
            client.post("/v1/integrations", json=body, headers=auth),
            client.patch(ITEM, json={"name": "m"}, headers=auth),
            client.get(ITEM),
            client.get("/v1/integrations/int_nope", headers=auth),
            client.patch(ITEM, json={"stauts": "DISABLED"}, headers=auth),
            client.delete(ITEM, headers=auth),
            client.get("/v1/elsewhere", headers=auth),
        ]
    assert [a.status_code for a in answers] == [200, 200, 201, 200, 401, 404, 422, 405, 404]
    assert [a.headers.get("cache-control") for a in answers] == ["no-store"] * len(answers)


GENERIC = {
    500: {"errors": [{"code": "INTERNAL_ERROR", "message": "Internal error"}]},
    503: {
        "errors": [
            {
                "code": "SERVICE_UNAVAILABLE",
                "message": "The service is temporarily unavailable; retry shortly",
            }
        ]
    },
}
LEAKS = ("select", "insert", "update ", "integrations_", "traceback", "asyncpg", "sqlite", ".py")


def _leaks(answer: httpx.Response) -> list[str]:
    text = (answer.text + repr(dict(answer.headers))).lower()
    return [word for word in LEAKS if word in text]


def test_a_bug_answers_a_bare_500_without_its_trace(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cbstop.integrations import service

    async def broken(*_: Any) -> Any:
        raise RuntimeError("SELECT key_hash FROM api_keys -- Traceback (most recent call last)")

    matrix = world("matrix")
    auth = {"Authorization": f"Bearer {secret(matrix, 'key_org_a1')}"}
    monkeypatch.setattr(service, "get_integration", broken)
    with api_client(database_url, matrix) as client:
        answer = client.get(ITEM, headers=auth)
    assert answer.status_code == 500
    assert answer.json() == GENERIC[500]
    assert _leaks(answer) == []


def test_a_broken_schema_answers_without_sql(database_url: str) -> None:
    matrix = world("matrix")
    auth = {"Authorization": f"Bearer {secret(matrix, 'key_org_a1')}"}
    with api_client(database_url, matrix) as client:
        assert client.get(ITEM, headers=auth).status_code == 200
        # An operator's mistake (a half-applied migration, say) that breaks every query.
        if database_url.startswith("sqlite"):
            import sqlite3

            conn = sqlite3.connect(database_url[len("sqlite:///") :])
            conn.execute("ALTER TABLE integration_merchants RENAME TO integration_merchants_x")
            conn.commit()
            conn.close()
        else:
            import psycopg

            with psycopg.connect(database_url, autocommit=True) as pg:
                pg.execute("ALTER TABLE integration_merchants RENAME TO integration_merchants_x")
        answers = [
            client.get(ITEM, headers=auth),
            client.get("/v1/integrations", headers=auth),
            client.patch(ITEM, json={"name": "x"}, headers=auth),
        ]
    for answer in answers:
        assert answer.status_code in GENERIC, answer.text
        assert answer.json() == GENERIC[answer.status_code]
        assert _leaks(answer) == []


@pytest.mark.parametrize(
    ("secret_value", "what"),
    [(PLACEHOLDER_KEY_SECRET, "the placeholder"), (None, "no secret"), ("short", "short")],
)
def test_production_mode_refuses_to_start_without_a_real_secret(
    secret_value: str | None, what: str, tmp_path: Any
) -> None:
    env = base_env(CBSTOP_PRODUCTION="true")
    env.pop("CBSTOP_KEY_SECRET")
    if secret_value is not None:
        env["CBSTOP_KEY_SECRET"] = secret_value
    argv = [CBSTOP, "serve", "--port", str(free_port())]
    argv += ["--database-url", f"sqlite:///{tmp_path / 'never.db'}"]
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0, what
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "CBSTOP_KEY_SECRET" in lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert not os.path.exists(tmp_path / "never.db"), "it touched the database first"


@pytest.mark.slow
@pytest.mark.xdist_group("servers")
def test_no_key_material_in_logs_and_revocation_within_1s(database_url: str) -> None:
    matrix = world("matrix")
    load_world(database_url, matrix, key_secret=TEST_KEY_SECRET)
    valid = secret(matrix, "key_org_a1")
    to_revoke = secret(matrix, "key_org_d")
    used = [valid, to_revoke, secret(matrix, "key_revoked_a1"), UNKNOWN]
    answers: list[tuple[float, int]] = []
    stop = threading.Event()
    with running(database_url, env={"CBSTOP_ACCESS_LOG": "true"}) as server:
        with httpx.Client(base_url=server.url, timeout=5) as client:
            for key in used:
                for scheme in ("Bearer", "bearer", "Basic"):
                    auth = {"Authorization": f"{scheme} {key}"}
                    client.get(ITEM, headers=auth)
                    client.get(f"/v1/integrations?api_key={key}", headers=auth)
                    client.get(f"/v1/integrations/{key}", headers=auth)
                    client.patch(ITEM, content=key, headers=auth)

            def poll() -> None:
                auth = {"Authorization": f"Bearer {to_revoke}"}
                while not stop.is_set():
                    answers.append((time.monotonic(), client.get(ITEM, headers=auth).status_code))
                    time.sleep(0.01)

            poller = threading.Thread(target=poll)
            poller.start()
            try:
                with RevocationWatch(database_url, "key_org_d") as watch:
                    time.sleep(0.3)
                    done = cbstop(["keys", "revoke", "key_org_d"], CBSTOP_DATABASE_URL=database_url)
                    assert done.returncode == 0, done.stderr
                    time.sleep(1.5)
            finally:
                stop.set()
                poller.join()
        server.stop()
        output = server.output + done.stdout + done.stderr
    assert '"route":"/v1/integrations/{integration_id}"' in output  # the access log is on
    for key in used:
        assert key not in output
        assert hash_key(TEST_KEY_SECRET, key) not in output
    # The key was good (404: int_a1_orders is not org_d's) until revoked, then 401 for good.
    assert {status for _, status in answers} == {404, 401}
    last_good = max(t for t, status in answers if status == 404)
    assert answers[-1][1] == 401
    assert watch.seen is not None, "the revocation never reached the database"
    delay = last_good - watch.seen
    print(f"\n[security] revoked key last answered {delay:.3f}s after the revocation committed")
    assert delay < 1.0
