"""Rotating the key secret under traffic, as docs/production.md's runbook says: two
`cbstop serve` instances on one PostgreSQL behind a balancer, restarted one at a time
through the three phases, and not one request answered with anything but 200."""

from __future__ import annotations

import random
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest

from cbstop.auth.keys import hash_key, secret_fingerprint
from cbstop.world.loader import load_world
from tests.integrations.helpers import world
from tests.reliability.processes import Server, cbstop, free_port
from tests.support import TEST_KEY_SECRET, query

pytestmark = [pytest.mark.postgres_only, pytest.mark.slow, pytest.mark.xdist_group("servers")]

OLD = TEST_KEY_SECRET
NEW = "the-new-key-secret-after-rotation-0123"
CREATED_KEYS = 4  # made with `cbstop keys create`, besides the world's
MIXED = 2.0  # seconds a restarted instance serves beside the other before the next restart
LIVE = "SELECT id, key_hash, secret_fingerprint FROM api_keys WHERE NOT revoked ORDER BY id"
REHASHED = re.compile(r"re-hashed (\d+) keys with the newest key secret")


@dataclass
class Balancer:
    """Sends steady authenticated GETs, each to the next instance in rotation, skipping the
    ones taken out (as a load balancer does before an instance is stopped)."""

    servers: list[Server]
    keys: list[str]
    lock: threading.Lock = field(default_factory=threading.Lock)
    out: set[int] = field(default_factory=set)
    answers: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _clients: list[httpx.Client] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._clients = [httpx.Client(base_url=s.url, timeout=10) for s in self.servers]
        self._thread = threading.Thread(target=self._run, name="balancer")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for client in self._clients:
            client.close()

    def take_out(self, index: int) -> None:
        """No request goes to instance `index` from now on (and none is in flight to it)."""
        with self.lock:
            self.out.add(index)

    def put_back(self, index: int, server: Server) -> None:
        with self.lock:
            self._clients[index].close()
            self.servers[index] = server
            self._clients[index] = httpx.Client(base_url=server.url, timeout=10)
            self.out.discard(index)

    def _run(self) -> None:
        pick = random.Random(11)
        turn = 0
        while not self._stop.is_set():
            with self.lock:
                serving = [i for i in range(len(self.servers)) if i not in self.out]
                index = serving[turn % len(serving)]
                turn += 1
                key = pick.choice(self.keys)
                try:
                    answer = self._clients[index].get(
                        "/v1/integrations", headers={"Authorization": f"Bearer {key}"}
                    )
                    outcome = str(answer.status_code)
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                self.sent += 1
                self.answers[outcome] += 1
            time.sleep(0.004)


def secret_env(secrets: str) -> dict[str, str]:
    return {"CBSTOP_KEY_SECRET": secrets, "CBSTOP_KEY_LAST_USED_INTERVAL": "1"}


def started(url: str, secrets: str) -> Server:
    server = Server(url, env=secret_env(secrets))
    server.start()
    server.wait_ready()
    return server


def restart(balancer: Balancer, index: int, url: str, secrets: str, logs: list[str]) -> None:
    """Take the instance out of the balancer, stop it with SIGTERM (it drains), start it
    again with `secrets`, and put it back once it is ready."""
    balancer.take_out(index)
    old = balancer.servers[index]
    old.signal(signal.SIGTERM)
    assert old.wait(timeout=30) == 0, old.output[-2000:]
    logs.append(old.stderr)
    old.stop()
    old.cleanup()
    balancer.put_back(index, started(url, secrets))
    # Both versions serve side by side for a while, as in any rolling restart.
    time.sleep(MIXED)


def live_keys_on(url: str, secrets: str) -> dict[str, int]:
    """`cbstop keys list`'s count of live keys per secret fingerprint, as an operator reads it."""
    listed = cbstop(["keys", "list", "--database-url", url], CBSTOP_KEY_SECRET=secrets)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    summary = lines[lines.index("") + 3 :]
    return {line.split()[0]: int(line.split()[1]) for line in summary}


def test_the_key_secret_rotates_under_traffic_with_zero_failed_requests(postgres_url: str) -> None:
    url = postgres_url
    matrix = world("matrix")
    # Every live key answers GET with 200 (keys without the read ability are left out).
    matrix["api_keys"] = [
        k
        for k in matrix["api_keys"]
        if "integrations:read" in k.get("abilities", ["integrations:read"]) or k.get("revoked")
    ]
    load_world(url, matrix, key_secret=OLD)
    keys = [k["secret"] for k in matrix["api_keys"] if not k.get("revoked")]
    for organisation in ("org_a1", "org_d", "org_a1", "org_b1")[:CREATED_KEYS]:
        made = cbstop(["keys", "create", "--organisation", organisation, "--database-url", url])
        assert made.returncode == 0, made.stderr
        keys.append(made.stdout.splitlines()[2])
    old_fp, new_fp = secret_fingerprint(OLD), secret_fingerprint(NEW)
    assert live_keys_on(url, OLD) == {old_fp: len(keys)}

    logs: list[str] = []
    began = time.monotonic()
    balancer = Balancer([started(url, OLD), started(url, OLD)], keys)
    balancer.start()
    try:
        time.sleep(1)
        # Phase 1: every instance accepts the new secret, still hashing with the old one.
        for index in (0, 1):
            restart(balancer, index, url, f"{OLD},{NEW}", logs)
        time.sleep(1)
        assert live_keys_on(url, f"{OLD},{NEW}") == {old_fp: len(keys), new_fp: 0}
        # Phase 2: the new secret first; keys move to it on use.
        for index in (0, 1):
            restart(balancer, index, url, f"{NEW},{OLD}", logs)
        deadline = time.monotonic() + 60
        while live_keys_on(url, f"{NEW},{OLD}") != {new_fp: len(keys), old_fp: 0}:
            assert time.monotonic() < deadline, live_keys_on(url, f"{NEW},{OLD}")
            time.sleep(0.5)
        # Phase 3: no live key is on the old secret any more; drop it.
        for index in (0, 1):
            restart(balancer, index, url, NEW, logs)
        time.sleep(1)
    finally:
        balancer.stop()
        for server in balancer.servers:
            server.stop()
            logs.append(server.stderr)
            server.cleanup()
    seconds = time.monotonic() - began

    failures = balancer.sent - balancer.answers["200"]
    rehash_writes = sum(int(n) for log in logs for n in REHASHED.findall(log))
    figures = (
        f"[key rotation] {balancer.sent} requests over {seconds:.1f} s through 6 restarts "
        f"(2 instances x 3 phases), {failures} not 200 ({dict(balancer.answers)}); "
        f"{len(keys)} live keys moved to the new secret in {rehash_writes} re-hash writes"
    )
    print("\n" + figures)
    assert failures == 0, figures
    assert balancer.answers["200"] > 200, figures

    # Every live key is on the new secret; the revoked one never moves and holds nothing back.
    live = query(url, LIVE)
    assert len(live) == len(keys)
    assert {fp for _, _, fp in live} == {new_fp}
    assert {h for _, h, _ in live} == {hash_key(NEW, k) for k in keys}
    assert live_keys_on(url, NEW) == {new_fp: len(keys)}

    # The old secret alone is refused, in one line; the new one alone serves every key.
    port = str(free_port())
    refused = cbstop(["serve", "--port", port, "--database-url", url], CBSTOP_KEY_SECRET=OLD)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr.startswith("cbstop: error: CBSTOP_KEY_SECRET does not match")
    assert refused.stderr.count("\n") == 1
    alone = started(url, NEW)
    try:
        with httpx.Client(base_url=alone.url) as client:
            for key in keys:
                answer = client.get("/v1/integrations", headers={"Authorization": f"Bearer {key}"})
                assert answer.status_code == 200, answer.text
    finally:
        alone.stop()
        alone.cleanup()
