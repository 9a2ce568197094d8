"""`serve` hands its one `Settings` object to every worker, whole: no field is lost on the way
and none is read again from the environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from cbstop import server
from cbstop.observability import logging as obs_logging
from cbstop.settings import Settings
from cbstop.world.loader import load_world
from tests.integrations.helpers import secret, world
from tests.reliability.processes import REPO, free_port
from tests.support import TEST_KEY_SECRET

# Starts `serve` from Python with settings built in code, in an environment with no CBSTOP_
# variable at all: whatever a worker knows, it knows from the object.
SERVE = """
import sys
from cbstop.server import serve
from cbstop.settings import Settings
serve(Settings.model_validate_json(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), workers=2)
"""


def test_a_worker_builds_its_app_on_every_field_serve_handed_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    given = Settings(
        database_url="sqlite:///handed-down.db",
        key_secret="a-secret-given-in-code-only-0123",
        production=True,
        pool_max_size=3,
        pool_max_lifetime=7.0,
        pool_timeout=0.25,
        statement_timeout=0.75,
        key_cache_ttl=0.0,
        drain_timeout=2.0,
        access_log=False,
        header_timeout=3.0,
        body_timeout=4.0,
        max_connections=50,
        idempotency_ttl=5.0,
        idempotency_purge_interval=2.0,
        idempotency_cache_size=5,
        access_log_probes=False,
        log_level="warning",
        keep_alive_timeout=70.0,
        proxy_headers=True,
        forwarded_allow_ips="10.0.0.1",
        key_last_used_interval=5.0,
        rate_limit="7/3",
        auth_failure_limit="off",
        redis_url="redis://127.0.0.1:6379/5",
        redis_timeout=0.5,
        redis_prefix="handed-down",
        max_in_flight=9,
        event_retention_days=2.0,
        event_purge_interval=3.0,
        event_poll_interval=0.5,
        webhook_timeout=4.0,
        webhook_retry_schedule="1,2",
        webhook_concurrency=3,
    )
    assert all(getattr(given, f) != d.default for f, d in Settings.model_fields.items())
    monkeypatch.setattr(obs_logging, "configure", lambda: None)  # pytest's logging stays
    monkeypatch.setenv(server.WORKER_SETTINGS, given.to_json())
    monkeypatch.setenv("CBSTOP_POOL_MAX_SIZE", "9")  # a stray variable does not win
    app = server.app_factory()
    try:
        assert app.state.settings == given
    finally:
        server._states.remove(app.state)


@pytest.fixture
def matrix_url(postgres_url: str) -> Iterator[str]:
    load_world(postgres_url, world("matrix"), key_secret=TEST_KEY_SECRET)
    yield postgres_url


def _worker(response: httpx.Response) -> str:
    """Which worker answered: request ids it issues start with its own prefix."""
    return response.headers["x-request-id"].rsplit("-", 1)[0]


def _waiting_on_locks(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cbstop' "
            "AND wait_event_type = 'Lock' AND datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.slow
@pytest.mark.xdist_group("servers")
def test_settings_given_in_code_reach_every_worker_and_the_secret_is_never_logged(
    matrix_url: str, tmp_path: Path
) -> None:
    """Key secret, database, access log and pool size given only in code, to two workers.

    Each worker authenticates the world's keys (the secret arrived), writes no access line
    (access_log off arrived), and lets one request at a time at the database (a pool of one
    arrived: of four PATCHes stuck behind a row lock, two reach PostgreSQL, one per worker).
    """
    given = Settings(
        database_url=matrix_url,
        key_secret=TEST_KEY_SECRET,
        access_log=False,
        pool_max_size=1,
        pool_timeout=20,
        statement_timeout=20,
        drain_timeout=5,
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBSTOP_")}
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVE, given.to_json(), str(port)],
            env=env,
            cwd=REPO,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    headers = {"Authorization": f"Bearer {secret(world('matrix'), 'key_org_a1')}"}
    clients: dict[str, list[httpx.Client]] = {}
    opened: list[httpx.Client] = []
    try:
        # Two kept-alive connections to each worker, each proven to authenticate there.
        deadline = time.monotonic() + 60
        while sum(min(len(c), 2) for c in clients.values()) < 4:
            assert process.poll() is None, err.read_text()
            assert time.monotonic() < deadline, f"workers seen: {list(clients)}"
            client = httpx.Client(base_url=base, headers=headers, timeout=30)
            opened.append(client)
            try:
                answer = client.get("/v1/integrations/int_a1_orders")
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            assert answer.status_code == 200, answer.text
            clients.setdefault(_worker(answer), []).append(client)
        assert len(clients) == 2
        patched: list[int] = []

        def patch(client: httpx.Client) -> None:
            answer = client.patch("/v1/integrations/int_a1_orders", json={"name": "handed down"})
            patched.append(answer.status_code)

        stuck = [
            threading.Thread(target=patch, args=(client,))
            for pair in clients.values()
            for client in pair[:2]
        ]
        with psycopg.connect(matrix_url) as side:
            side.execute("SELECT 1 FROM integrations WHERE id = 'int_a1_orders' FOR UPDATE")
            for thread in stuck:
                thread.start()
            deadline = time.monotonic() + 10
            while _waiting_on_locks(matrix_url) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # time enough for a bigger pool to send the other two
            waiting = _waiting_on_locks(matrix_url)
            side.rollback()
        for thread in stuck:
            thread.join(timeout=30)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    finally:
        for client in opened:
            client.close()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    logged = out.read_text() + err.read_text()
    assert waiting == 2
    assert patched == [200] * 4
    assert code == 0, logged[-3000:]
    assert '"request_id"' not in logged  # no access line from either worker
    assert TEST_KEY_SECRET not in logged
    assert server.WORKER_SETTINGS not in logged
