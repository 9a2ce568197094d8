"""Webhook delivery by real `cbstop serve` processes (CONTRACT 3.5): a server killed with
SIGKILL mid-delivery loses nothing (the delivery is attempted again once its lease ends), and
several instances on one database make each attempt exactly once."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

from cbstop.world.loader import load_world
from tests.integrations.helpers import auth, create_body, world
from tests.reliability.processes import Server, running, started
from tests.support import TEST_KEY_SECRET, query
from tests.webhooks.receiver import Receiver, Script, add_endpoint, deliveries, eventually

# A short timeout makes a short lease (timeout + 5 s), so the restarted server's attempt comes
# within seconds of the kill.
ENV = {
    "CBSTOP_WEBHOOK_TIMEOUT": "1",
    "CBSTOP_WEBHOOK_RETRY_SCHEDULE": "0.2,0.2,0.2",
    "CBSTOP_EVENT_POLL_INTERVAL": "0.05",
}


def post_integration(base_url: str, name: str) -> str:
    """Create an integration in org_a1 through a server; its id."""
    response = httpx.post(
        f"{base_url}/v1/integrations",
        json=create_body(name=name),
        headers=auth("key_org_a1"),
        timeout=10,
    )
    assert response.status_code == 201, response.text
    integration_id: str = response.json()["id"]
    return integration_id


def test_a_server_killed_mid_delivery_delivers_the_event_after_its_restart(
    database_url: str, receiver: Receiver
) -> None:
    load_world(database_url, world("matrix"), key_secret=TEST_KEY_SECRET)
    add_endpoint(database_url, "we_a1", receiver.url, organisation_id="org_a1")
    # The first request is held open past the kill; the one after the restart is answered.
    receiver.script = Script(holds=[30.0])
    with running(database_url, env=ENV) as server:
        integration_id = post_integration(server.url, "Killed mid-delivery")
        first = receiver.wait_for(lambda r: len(r) >= 1)[0]
        assert server.proc is not None
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.wait(10)
    (event_id,) = [r[0] for r in query(database_url, "SELECT id FROM events")]
    assert first.webhook_id == event_id
    # Claimed and never answered: still pending, its lease not yet over.
    assert deliveries(database_url) == {("we_a1", event_id): ("pending", 1)}
    with running(database_url, env=ENV):
        got = receiver.wait_for(lambda r: len(r) >= 2, timeout=30)

        def delivered() -> None:
            assert deliveries(database_url) == {("we_a1", event_id): ("delivered", 2)}

        eventually(delivered)
    assert [r.webhook_id for r in got] == [event_id, event_id]
    assert got[1].body == first.body
    # The killed process recorded nothing; the restarted one its attempt.
    rows = query(database_url, "SELECT attempt, status_code FROM webhook_attempts")
    assert rows == [(2, 200)]
    assert integration_id in first.body.decode()


EVENTS = 60
# Here every attempt must succeed at the first try, so the timeout is the default's, not the
# 1 s above: under CI's load an attempt among 48 at once can take longer than 1 s to connect,
# time out, and be retried -- a second attempt rightly made, not a second claim.
INSTANCE_ENV = {**ENV, "CBSTOP_WEBHOOK_TIMEOUT": "10"}


def test_three_instances_on_one_database_deliver_every_event_exactly_once(
    postgres_url: str, receiver: Receiver
) -> None:
    database_url = postgres_url
    load_world(database_url, world("matrix"), key_secret=TEST_KEY_SECRET)
    add_endpoint(database_url, "we_a1", receiver.url, organisation_id="org_a1")
    # A little time per request, so the instances' attempts overlap.
    receiver.script = Script(default_hold=0.02)
    servers = [Server(database_url, env=INSTANCE_ENV) for _ in range(3)]
    with started(servers[0]), started(servers[1]), started(servers[2]):
        with ThreadPoolExecutor(8) as pool:
            ids = list(
                pool.map(lambda n: post_integration(servers[n % 3].url, f"Feed {n}"), range(EVENTS))
            )
        receiver.wait_for(lambda r: len(r) >= EVENTS, timeout=60)

        def all_delivered() -> None:
            states = deliveries(database_url)
            assert len(states) == EVENTS
            # On failure, the attempts that were not the one expected say why.
            assert set(states.values()) == {("delivered", 1)}, query(
                database_url,
                "SELECT event_id, attempt, status_code, error, worker FROM webhook_attempts"
                " WHERE attempt > 1 OR status_code IS DISTINCT FROM 200",
            )

        eventually(all_delivered, timeout=30)
        time.sleep(1.0)  # any duplicate attempt would have been made by now
    got = Counter(r.webhook_id for r in receiver.received())
    events = {r[0] for r in query(database_url, "SELECT id FROM events")}
    assert len(ids) == len(events) == EVENTS
    assert set(got) == events
    assert set(got.values()) == {1}
    rows = query(
        database_url, "SELECT event_id, attempt, status_code, worker FROM webhook_attempts"
    )
    assert len(rows) == EVENTS
    assert {(r[0], r[1], r[2]) for r in rows} == {(e, 1, 200) for e in events}
