"""Bounded waits: a statement past `statement_timeout` and a request that cannot get a pooled
connection within `pool_timeout` both answer 503 at once, never queue without bound."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import psycopg
import pytest

from cbstop.world.loader import load_world
from tests.conftest import _require_postgres
from tests.integrations.helpers import secret, world
from tests.reliability.processes import Server, envelope_code, running
from tests.support import TEST_KEY_SECRET, DatabaseMaker

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("servers")]

POOL_SIZE = 2
POOL_TIMEOUT = 0.3
STATEMENT_TIMEOUT = 1.5  # long enough that no held connection frees up mid-test
MARGIN = 0.6  # scheduling and round trips on a busy 2-core machine


@dataclass
class Limited:
    server: Server
    url: str
    headers: dict[str, str]


@pytest.fixture(scope="module")
def limited(database_maker: DatabaseMaker) -> Iterator[Limited]:
    """A `cbstop serve` with a tiny pool and short timeouts, over the matrix world."""
    _require_postgres()
    matrix = world("matrix")
    with database_maker.database("postgresql") as url:
        load_world(url, matrix, key_secret=TEST_KEY_SECRET)
        env = {
            "CBSTOP_POOL_MAX_SIZE": str(POOL_SIZE),
            "CBSTOP_POOL_TIMEOUT": str(POOL_TIMEOUT),
            "CBSTOP_STATEMENT_TIMEOUT": str(STATEMENT_TIMEOUT),
        }
        with running(url, env=env) as server:
            yield Limited(server, url, {"Authorization": f"Bearer {secret(matrix, 'key_org_a1')}"})


@contextmanager
def integrations_locked(url: str) -> Iterator[None]:
    """Another session holds an exclusive lock on `integrations` (a stuck migration, say)."""
    with psycopg.connect(url) as side:
        side.execute("LOCK TABLE integrations IN ACCESS EXCLUSIVE MODE")
        yield
        side.rollback()


def _timed(
    client: httpx.Client, method: str, path: str, **kw: object
) -> tuple[float, httpx.Response]:
    started = time.monotonic()
    answer = client.request(method, path, **kw)  # type: ignore[arg-type]
    return time.monotonic() - started, answer


def _assert_unavailable(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert envelope_code(answer) == "SERVICE_UNAVAILABLE"
    assert answer.headers["retry-after"] == "1"


def test_statement_past_the_timeout_answers_503_and_changes_nothing(limited: Limited) -> None:
    path = "/v1/integrations/int_a1_orders"
    with httpx.Client(base_url=limited.server.url, headers=limited.headers, timeout=10) as client:
        before = client.get(path).json()
        with integrations_locked(limited.url):
            took_patch, patched = _timed(client, "PATCH", path, json={"name": "never written"})
            took_get, got = _timed(client, "GET", path)
        for took, answer in ((took_patch, patched), (took_get, got)):
            _assert_unavailable(answer)
            # It waited for the statement timeout, and not much longer.
            assert STATEMENT_TIMEOUT * 0.8 <= took <= STATEMENT_TIMEOUT + MARGIN, took
        assert client.get(path).json() == before
        assert client.patch(path, json={"name": before["name"]}).status_code == 200


def test_requests_past_the_pool_wait_answer_503_instead_of_queueing(limited: Limited) -> None:
    base = limited.server.url
    item = "/v1/integrations/int_a1_orders"
    holders: list[tuple[float, httpx.Response]] = []
    waiters: list[tuple[float, httpx.Response]] = []

    def hold() -> None:
        with httpx.Client(base_url=base, headers=limited.headers, timeout=10) as client:
            holders.append(_timed(client, "PATCH", item, json={"name": "held"}))

    # Clients made up front: twenty made at once would start their requests late.
    clients = [httpx.Client(base_url=base, headers=limited.headers, timeout=10) for _ in range(20)]

    def wait(client: httpx.Client) -> tuple[float, httpx.Response]:
        with client:
            return _timed(client, "GET", item)

    with httpx.Client(base_url=base, timeout=10) as probe:
        with integrations_locked(limited.url):
            # Every pooled connection ends up stuck behind the lock...
            blocking = [threading.Thread(target=hold) for _ in range(POOL_SIZE)]
            for thread in blocking:
                thread.start()
            time.sleep(0.2)
            # ...so twenty more requests find none free.
            with ThreadPoolExecutor(20) as pool:
                futures = [pool.submit(wait, client) for client in clients]
                time.sleep(0.1)
                metrics = probe.get("/metrics").text
                waiters = [f.result() for f in futures]
            for thread in blocking:
                thread.join()
        after = [probe.get(item, headers=limited.headers) for _ in range(5)]

    gauges = dict(
        line.split(" ", 1) for line in metrics.splitlines() if line.startswith("cbstop_db")
    )
    assert gauges["cbstop_db_pool_in_use"] == str(POOL_SIZE), metrics
    assert int(gauges["cbstop_db_pool_waiting"]) >= 1, metrics
    for took, answer in waiters:
        _assert_unavailable(answer)
        assert took <= POOL_TIMEOUT + MARGIN, took
    for took, answer in holders:
        _assert_unavailable(answer)
        assert took <= STATEMENT_TIMEOUT + MARGIN, took
    # Nothing queued behind the storm: once the lock goes, requests succeed at once.
    assert [a.status_code for a in after] == [200] * 5
    assert after[0].json()["name"] != "held"
    print(
        f"\n[limits] {len(waiters)} requests refused after at most "
        f"{max(t for t, _ in waiters):.3f}s waiting for a connection (pool_timeout "
        f"{POOL_TIMEOUT}s); statements cut at {max(t for t, _ in holders):.3f}s "
        f"(statement_timeout {STATEMENT_TIMEOUT}s)"
    )
