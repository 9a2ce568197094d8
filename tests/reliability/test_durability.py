"""Durability (issue 14): every write a client was told succeeded survives a crash, and a
create the client heard nothing about can be retried with its Idempotency-Key to exactly one.

Sixteen clients create (each create with its own Idempotency-Key) and rename integrations
they created, against a real `cbstop serve` with two workers, when the database crashes
(`pg_ctl stop -m immediate`) or the server is killed (SIGKILL to its process group) under
them; they keep sending for a moment into the fault. Then, with the database back or a new
server on it:

- every create answered 201 reads back (GET, and its rows in the database) as answered;
- every other create, retried with the same key and body, ends in 201: a replay if its first
  attempt was committed, a first write if not;
- the organisation's list `count`, the rows, the stored keys and the `integration.created`
  events number exactly the distinct keys sent: none missing, none duplicated.

Renames: each integration is renamed only by the client that created it, one request after
the other, and the client stops waiting for nothing (its timeout is far longer than any
answer in a fault), so no earlier rename can land after a later one is answered. The stored
name must therefore be the last name acknowledged (200; the created name if none was) or one
sent after it whose answer was lost (503 or no answer: it may or may not have been
committed). Each rename changes the name, so its integration's `integration.updated` events
number at least the acknowledged renames and at most every rename sent.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from cbstop.db.migrate import migrate
from cbstop.world.loader import load_world
from tests.integrations.helpers import representation, secret, world
from tests.reliability.processes import Server, cluster, envelope_code, started
from tests.support import TEST_KEY_SECRET, query

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("servers")]

CLIENTS = 16
LOAD = 1.0  # seconds of load before the fault
INTO_THE_FAULT = 0.5  # seconds the clients keep sending once it happened
PAUSE = 0.05  # seconds a client waits after a failed request (no busy loop against a fault)
RECOVERY = 20.0  # seconds the service may take to serve again after the fault
ORGANISATION = "org_a1"
MERCHANTS = ["mrch_a1_1", "mrch_a1_2"]
MATRIX = world("matrix")
HEADERS = {"Authorization": f"Bearer {secret(MATRIX, 'key_org_a1')}"}
WORLD_IN_ORGANISATION = sum(1 for i in MATRIX["integrations"] if i["organisation_id"] == "org_a1")
WORLD_IDS = {i["id"] for i in MATRIX["integrations"]}


@dataclass
class Create:
    """One create: its key and body, and the integration if it was answered 201."""

    key: str
    body: dict[str, Any]
    answered: dict[str, Any] | None = None


@dataclass
class Named:
    """An acknowledged integration's names: the last acknowledged, and those sent after it
    whose answer was lost."""

    id: str
    acknowledged: str
    uncertain: list[str] = field(default_factory=list)
    renames_acknowledged: int = 0
    renames_lost: int = 0


class Load:
    """CLIENTS concurrent clients creating and renaming until stopped; what each was told."""

    def __init__(self, client: httpx.AsyncClient, tag: str) -> None:
        self.client = client
        self.tag = tag
        self.creates: list[Create] = []
        self.named: dict[str, Named] = {}
        self.unexpected: list[str] = []  # answers a fault must not give
        self.lost = 0  # requests with no answer or a 503
        self.stop = asyncio.Event()

    async def _request(self, method: str, path: str, **kw: Any) -> httpx.Response | None:
        """The answer if it is `ok`; None (and the request counted as lost) if it is a 503
        SERVICE_UNAVAILABLE or none came; anything else is noted as unexpected."""
        try:
            answer = await self.client.request(method, path, **kw)
        except httpx.TransportError:
            self.lost += 1
            return None
        if answer.status_code in (200, 201):
            return answer
        if answer.status_code == 503 and envelope_code(answer) == "SERVICE_UNAVAILABLE":
            self.lost += 1
            return None
        self.unexpected.append(f"{method} {path}: {answer.status_code} {answer.text[:200]}")
        return None

    async def _create(self, number: int, step: int, mine: list[Named]) -> None:
        body: dict[str, Any] = {
            "organisation_id": ORGANISATION,
            "name": f"{self.tag} c{number}-{step}",
            "type": "CUSTOM_ORDERS",
            "merchant_ids": MERCHANTS if step % 2 else MERCHANTS[::-1],
        }
        create = Create(f"{self.tag}-{number}-{step}", body)
        self.creates.append(create)
        headers = {**HEADERS, "Idempotency-Key": create.key}
        answer = await self._request("POST", "/v1/integrations", json=body, headers=headers)
        if answer is None:
            await asyncio.sleep(PAUSE)
            return
        assert answer.status_code == 201, answer.text
        create.answered = answer.json()
        named = Named(answer.json()["id"], body["name"])
        mine.append(named)
        self.named[named.id] = named

    async def _rename(self, number: int, step: int, target: Named) -> None:
        name = f"{self.tag} r{number}-{step}"
        path = f"/v1/integrations/{target.id}"
        answer = await self._request("PATCH", path, json={"name": name}, headers=HEADERS)
        if answer is None:
            target.uncertain.append(name)
            target.renames_lost += 1
            await asyncio.sleep(PAUSE)
            return
        assert answer.status_code == 200 and answer.json()["name"] == name, answer.text
        target.acknowledged, target.uncertain = name, []
        target.renames_acknowledged += 1

    async def _run(self, number: int) -> None:
        mine: list[Named] = []
        step = 0
        while not self.stop.is_set():
            step += 1
            if step % 3 == 0 and mine:
                await self._rename(number, step, mine[(step // 3) % len(mine)])
            else:
                await self._create(number, step, mine)

    def acknowledged(self) -> int:
        return sum(1 for c in self.creates if c.answered is not None)

    async def around(self, fault: Callable[[], Awaitable[None]]) -> None:
        """Load for LOAD seconds (and until CLIENTS creates were acknowledged), the fault,
        INTO_THE_FAULT seconds more, then stop."""
        clients = [asyncio.create_task(self._run(n)) for n in range(CLIENTS)]
        await asyncio.sleep(LOAD)
        # On a busy machine a second may not be enough for the fault to have much to lose.
        deadline = time.monotonic() + 10
        while self.acknowledged() < CLIENTS and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await fault()
        await asyncio.sleep(INTO_THE_FAULT)
        self.stop.set()
        await asyncio.gather(*clients)


def _client(url: str) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    # Far longer than any answer in a fault: a request is never left running behind the client.
    return httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0)


async def _wait_ready(client: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + RECOVERY
    while time.monotonic() < deadline:
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"/readyz not 200 within {RECOVERY}s after the fault")


async def _retry(client: httpx.AsyncClient, create: Create) -> bool:
    """Send an unanswered create again, same key and body, until it is 201; whether the
    answer was a replay (its first attempt had been committed)."""
    headers = {**HEADERS, "Idempotency-Key": create.key}
    deadline = time.monotonic() + RECOVERY
    while True:
        assert time.monotonic() < deadline, f"{create.key}: never 201 after the fault"
        try:
            answer = await client.post("/v1/integrations", json=create.body, headers=headers)
        except httpx.TransportError:
            await asyncio.sleep(0.1)
            continue
        # 409: the first attempt's statement may still hold the key (a killed server's session
        # ends when PostgreSQL notices); 503 while the pool reconnects.
        if answer.status_code in (409, 503):
            await asyncio.sleep(0.1)
            continue
        assert answer.status_code == 201, (create.key, answer.status_code, answer.text)
        created = answer.json()
        assert created == representation(
            created["id"], ORGANISATION, create.body["name"], "CUSTOM_ORDERS", "ENABLED",
            create.body["merchant_ids"],
        )  # fmt: skip
        create.answered = created
        return bool(answer.headers.get("idempotent-replayed") == "true")


async def _read(client: httpx.AsyncClient, integration_id: str) -> dict[str, Any]:
    answer = await client.get(f"/v1/integrations/{integration_id}", headers=HEADERS)
    assert answer.status_code == 200, (integration_id, answer.status_code, answer.text)
    body: dict[str, Any] = answer.json()
    return body


async def _bounded(calls: list[Awaitable[Any]]) -> list[Any]:
    """Await the calls, CLIENTS at a time."""
    gate = asyncio.Semaphore(CLIENTS)

    async def one(call: Awaitable[Any]) -> Any:
        async with gate:
            return await call

    return list(await asyncio.gather(*(one(c) for c in calls)))


async def _settle_and_check(load: Load, client: httpx.AsyncClient, url: str) -> str:
    """After the fault: every acknowledged write is there, every unanswered create retried to
    exactly one; a line describing what was checked."""
    acknowledged = [c for c in load.creates if c.answered is not None]
    unanswered = [c for c in load.creates if c.answered is None]
    assert acknowledged, "no create was acknowledged before the fault"
    assert unanswered, "the fault reached no create"
    await _wait_ready(client)

    # Read back before retrying anything: no retry can make an acknowledged write appear.
    reads = await _bounded([_read(client, c.answered["id"]) for c in acknowledged if c.answered])
    for create, read in zip(acknowledged, reads, strict=True):
        assert create.answered is not None
        named = load.named[create.answered["id"]]
        assert {**read, "name": None} == {**create.answered, "name": None}, (read, create)
        assert read["name"] in [named.acknowledged, *named.uncertain], (read, named)
    replays = sum(await _bounded([_retry(client, c) for c in unanswered]))
    for create in unanswered:  # no rename was sent for these
        assert create.answered is not None
        assert await _read(client, create.answered["id"]) == create.answered

    # None missing, none duplicated: one integration per key, and nothing else new.
    ids = {c.answered["id"] for c in load.creates if c.answered is not None}
    assert len(ids) == len(load.creates)
    listed = await client.get("/v1/integrations?limit=1", headers=HEADERS)
    assert listed.status_code == 200, listed.text
    assert listed.json()["count"] == WORLD_IN_ORGANISATION + len(load.creates)
    _check_database(load, url, ids)
    return (
        f"{len(load.creates)} creates ({len(acknowledged)} acknowledged, {len(unanswered)} "
        f"retried: {replays} replayed, {len(unanswered) - replays} first written), "
        f"{sum(n.renames_acknowledged for n in load.named.values())} renames acknowledged, "
        f"{sum(n.renames_lost for n in load.named.values())} lost; {load.lost} requests lost"
    )


def _assert_only_success_or_unavailable(load: Load, server: Server) -> None:
    """No request met anything but success, 503 SERVICE_UNAVAILABLE or a lost connection."""
    if load.unexpected:
        log = server.stderr
        at = log.find("Traceback")
        raise AssertionError(
            "\n".join(load.unexpected[:10]) + "\n\nserver log:\n" + log[at : at + 4000]
        )


def _check_database(load: Load, url: str, ids: set[str]) -> None:
    """The rows themselves: integrations, merchants, stored keys and events, one per key."""
    rows = query(url, "SELECT id, organisation_id, name, type, status FROM integrations")
    assert {r[0] for r in rows} == ids | WORLD_IDS
    assert len(rows) == len(ids) + len(WORLD_IDS)
    stored = {r[0]: r for r in rows}
    merchants: dict[str, list[tuple[int, str]]] = {}
    for integration_id, position, merchant in query(
        url, "SELECT integration_id, position, merchant_id FROM integration_merchants"
    ):
        merchants.setdefault(integration_id, []).append((position, merchant))
    for create in load.creates:
        assert create.answered is not None
        integration_id = create.answered["id"]
        row = stored[integration_id]
        assert (row[1], row[3], row[4]) == (ORGANISATION, "CUSTOM_ORDERS", "ENABLED"), row
        named = load.named.get(integration_id)
        names = [named.acknowledged, *named.uncertain] if named else [create.body["name"]]
        assert row[2] in names, (row, names)
        assert [m for _, m in sorted(merchants[integration_id])] == create.body["merchant_ids"]

    keys = query(url, 'SELECT "key", body FROM idempotency_keys WHERE "key" LIKE ?', f"{load.tag}%")
    assert len(keys) == len(load.creates)
    by_key = {c.key: c.answered for c in load.creates}
    for key, body in keys:
        assert json.loads(bytes(body)) == by_key[key], key

    events = query(url, "SELECT type, integration_id FROM events")
    created = [i for t, i in events if t == "integration.created" and i in ids]
    assert sorted(created) == sorted(ids)
    updated: dict[str, int] = {}
    for kind, integration_id in events:
        if kind == "integration.updated" and integration_id in ids:
            updated[integration_id] = updated.get(integration_id, 0) + 1
    for integration_id in ids:
        named = load.named.get(integration_id)
        low = named.renames_acknowledged if named else 0
        high = low + (named.renames_lost if named else 0)
        assert low <= updated.get(integration_id, 0) <= high, (integration_id, named)


def _tag() -> str:
    return f"durable-{uuid.uuid4().hex[:10]}"


def test_writes_acknowledged_around_a_postgresql_crash_are_all_there_once() -> None:
    with cluster() as pg:
        url = pg.create_database("cbstop")
        migrate(url)
        load_world(url, world("matrix"), key_secret=TEST_KEY_SECRET)
        with started(Server(url, workers=2)) as server:

            async def crash() -> None:
                await asyncio.to_thread(pg.stop, "immediate")

            async def scenario() -> str:
                async with _client(server.url) as client:
                    load = Load(client, _tag())
                    await load.around(crash)
                    _assert_only_success_or_unavailable(load, server)
                    pg.start()
                    return await _settle_and_check(load, client, url)

            print(f"\n[pg_ctl stop -m immediate] {asyncio.run(scenario())}")


def test_writes_acknowledged_before_a_server_is_killed_are_all_there_once(
    database_url: str,
) -> None:
    load_world(database_url, world("matrix"), key_secret=TEST_KEY_SECRET)
    tag = _tag()
    first = Server(database_url, workers=2)
    with started(first):

        async def kill() -> None:
            assert first.proc is not None
            # The supervisor and its workers: the whole process group, no chance to finish.
            os.killpg(first.proc.pid, signal.SIGKILL)
            await asyncio.to_thread(first.wait, 10)

        async def before() -> Load:
            async with _client(first.url) as client:
                load = Load(client, tag)
                await load.around(kill)
                return load

        load = asyncio.run(before())
        _assert_only_success_or_unavailable(load, first)

    with started(Server(database_url, workers=2)) as second:

        async def after() -> str:
            async with _client(second.url) as client:
                return await _settle_and_check(load, client, database_url)

        print(f"\n[SIGKILL, {database_url.split(':')[0]}] {asyncio.run(after())}")
