"""Hypothesis: creates sent all at once are each answered as if sent alone (issue 14).

Concurrent creates of one worker may be gathered into one statement and one commit; whatever
the gathering, a batch must not change an answer. An example is a list of 2-24 creates from
five keys of the matrix world — valid ones, an unknown organisation, an organisation outside
the key's scope (404 `NOT_FOUND`), another organisation's merchant (422
`INVALID_MERCHANT_IDS`), a merchant twice (422 `DUPLICATE_MERCHANT_IDS`), a blank name (422
`VALIDATION_ERROR` on `name`) — some with an Idempotency-Key of their own, some repeating an
earlier request's key with its body (a replay) or with another (a reuse). They are sent in one
`asyncio.gather` over the in-process app, on one event loop, as a worker would receive them.

The oracle (`alone`) restates CONTRACT 1.4, 1.6 and 1.8 for one request. Requests sharing
(owner, key) are judged together (CONTRACT 3.1): one of them, whichever ran first, may be a
fresh success F; then a request with F's body is a replay of F's answer, a valid one with
another body is 422 `IDEMPOTENCY_KEY_REUSED`, and an invalid one gets its own error or REUSED
(it may have run before or after F's answer was stored). Without F every request gets its own
error. Then the database: exactly the fresh creates were added (integrations, merchant rows,
one event each, the keyed ones' answers), every key's list `count` and the maintained counts
went up by exactly those in its scope, and nothing else changed.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from cbstop.app import create_app
from cbstop.web.edge import Edge
from cbstop.world.loader import load_world
from tests.integrations.helpers import assert_error, assert_validation_error, representation
from tests.integrations.helpers import secret as key_secret
from tests.integrations.helpers import world as world_file
from tests.integrations.test_properties import SETTINGS
from tests.support import TEST_KEY_SECRET, bearer, make_settings, snapshot

EXAMPLES = settings(SETTINGS, max_examples=25)

# The keys that send, their owners (an Idempotency-Key's namespace) and what they may see.
KEYS: dict[str, tuple[str, frozenset[str]]] = {
    "key_org_a1": ("organisation:org_a1", frozenset({"org_a1"})),
    "key_admin_a": ("partner_group:pgrp_a_admin", frozenset({"org_a1", "org_a2"})),
    "key_assigned_a": ("partner_group:pgrp_a_assigned", frozenset({"org_a1"})),
    "key_org_d": ("organisation:org_d", frozenset({"org_d"})),
    "key_admin_b": ("partner_group:pgrp_b_admin", frozenset({"org_b1"})),
}
KEY_IDS = sorted(KEYS)
MERCHANTS = {
    "org_a1": ("mrch_a1_1", "mrch_a1_2"),
    "org_a2": ("mrch_a2_1", "mrch_a2_2"),
    "org_b1": ("mrch_b1_1", "mrch_b1_2"),
    "org_d": ("mrch_d_1", "mrch_d_2"),
}
PARTNERS = {"org_a1": "ptr_a", "org_a2": "ptr_a", "org_b1": "ptr_b", "org_d": None}
KINDS = ("valid", "valid", "valid", "unknown_org", "out_of_scope", "foreign", "twice", "blank")
# Tables a create writes to; every other table must stay exactly as it was.
WRITTEN = {
    "integrations",
    "integration_merchants",
    "organisation_integration_counts",
    "partner_integration_counts",
    "idempotency_keys",
    "events",
}


# --- what is sent ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One drawn create: `keying` is "none", "own" (a key of its own), "same" (an earlier
    keyed request again, body and all) or "other" (an earlier key with this step's body);
    `ref` picks that earlier request."""

    kind: str
    key_id: int
    choice: int
    keying: str
    ref: int


@dataclass(frozen=True)
class Sent:
    """A create resolved against its example."""

    key_id: str
    idempotency_key: str | None
    body: dict[str, Any]

    @property
    def owner(self) -> str:
        return KEYS[self.key_id][0]

    @property
    def fingerprint(self) -> str:
        return json.dumps(self.body, sort_keys=True)


steps = st.builds(
    Step,
    kind=st.sampled_from(KINDS),
    key_id=st.integers(0, len(KEY_IDS) - 1),
    choice=st.integers(0, 999),
    keying=st.sampled_from(["none", "none", "own", "own", "same", "other"]),
    ref=st.integers(0, 99),
)
# Sizes spread evenly over 2-24 (a plain st.lists favours short lists): batches are the point.
plans = st.integers(2, 24).flatmap(lambda n: st.lists(steps, min_size=n, max_size=n))


def _body(kind: str, key_id: str, choice: int, name: str) -> dict[str, Any]:
    """A create body of `kind` for `key_id`; `choice` picks among the bodies of that kind."""
    visible = sorted(KEYS[key_id][1])
    hidden = sorted(set(MERCHANTS) - set(visible))
    org = visible[choice % len(visible)]
    own = MERCHANTS[org]
    merchants = [[own[0]], [own[1]], list(own), list(reversed(own))][(choice // 7) % 4]
    body: dict[str, Any] = {"organisation_id": org, "name": name, "type": "CUSTOM_ORDERS"}
    if kind == "unknown_org":
        body["organisation_id"] = "org_missing"
    elif kind == "out_of_scope":
        body["organisation_id"] = hidden[choice % len(hidden)]
        merchants = [MERCHANTS[body["organisation_id"]][0]]
    elif kind == "foreign":
        strangers = [m for o in hidden for m in MERCHANTS[o]] + ["mrch_missing"]
        merchants = [own[0], strangers[choice % len(strangers)]]
    elif kind == "twice":
        # Checked before the organisation (CONTRACT 1.6): even one outside the scope.
        body["organisation_id"] = sorted(MERCHANTS)[choice % len(MERCHANTS)]
        merchants = [MERCHANTS[body["organisation_id"]][1]] * 2
    elif kind == "blank":
        body["name"] = " \t "
    body["merchant_ids"] = merchants
    status = (None, "ENABLED", "DISABLED")[(choice // 3) % 3]
    if status is not None:
        body["status"] = status
    return body


def resolve(plan: list[Step], tag: str) -> list[Sent]:
    """The requests of an example, names and keys carrying its tag."""
    sent: list[Sent] = []
    for number, step in enumerate(plan):
        key_id = KEY_IDS[step.key_id]
        keyed = [s for s in sent if s.idempotency_key is not None]
        idempotency_key: str | None = None
        if step.keying in ("same", "other") and keyed:
            earlier = keyed[step.ref % len(keyed)]
            if step.keying == "same":
                sent.append(earlier)
                continue
            key_id, idempotency_key = earlier.key_id, earlier.idempotency_key
        elif step.keying != "none":
            idempotency_key = f"{tag}-{number}"
        body = _body(step.kind, key_id, step.choice, f"{tag} {number}")
        sent.append(Sent(key_id, idempotency_key, body))
    return sent


# --- the oracle --------------------------------------------------------------------------------


def alone(sent: Sent) -> tuple[int, str | None, str | None]:
    """(status, error code, field) of the create sent alone, without a key."""
    body = sent.body
    if not body["name"].strip():
        return 422, "VALIDATION_ERROR", "name"
    if len(set(body["merchant_ids"])) != len(body["merchant_ids"]):
        return 422, "DUPLICATE_MERCHANT_IDS", None
    org = body["organisation_id"]
    if org not in KEYS[sent.key_id][1]:
        return 404, "NOT_FOUND", None
    if not set(body["merchant_ids"]) <= set(MERCHANTS[org]):
        return 422, "INVALID_MERCHANT_IDS", None
    return 201, None, None


def _assert_own_error(sent: Sent, answer: httpx.Response) -> None:
    status, code, field = alone(sent)
    assert code is not None, (sent, answer.status_code, answer.text)
    if code == "VALIDATION_ERROR":
        assert field is not None
        assert_validation_error(answer, field)
    else:
        assert_error(answer, status, code, field)
    assert "idempotent-replayed" not in answer.headers


def _assert_created(sent: Sent, answer: httpx.Response) -> None:
    assert answer.status_code == 201, (sent, answer.text)
    created = answer.json()
    body = sent.body
    assert created == representation(
        created["id"],
        body["organisation_id"],
        body["name"],
        "CUSTOM_ORDERS",
        body.get("status", "ENABLED"),
        body["merchant_ids"],
    )
    assert answer.headers["location"] == f"/v1/integrations/{created['id']}"
    assert answer.headers["etag"] == '"1"'


def _replayed(answer: httpx.Response) -> bool:
    return "idempotent-replayed" in answer.headers


def _is_reused(answer: httpx.Response) -> bool:
    return answer.status_code == 422 and '"IDEMPOTENCY_KEY_REUSED"' in answer.text


def judge_key(records: list[tuple[Sent, httpx.Response]]) -> tuple[Sent, httpx.Response] | None:
    """Judge the answers of one (owner, Idempotency-Key); its fresh success F, if any."""
    fresh = [(s, a) for s, a in records if a.status_code == 201 and not _replayed(a)]
    assert len(fresh) <= 1, [(s, a.text) for s, a in fresh]
    any_valid = any(alone(s)[0] == 201 for s, _ in records)
    # A valid request either wins the key or finds the winner's answer: so one wins.
    assert len(fresh) == int(any_valid), [(s, a.status_code, a.text) for s, a in records]
    first = fresh[0] if fresh else None
    for sent, answer in records:
        if first is not None and answer is first[1]:
            _assert_created(sent, answer)
            continue
        if first is not None and sent.fingerprint == first[0].fingerprint:
            event("replayed")
            assert answer.headers.get("idempotent-replayed") == "true", (sent, answer.text)
            assert answer.status_code == first[1].status_code
            assert answer.content == first[1].content
            assert answer.headers["location"] == first[1].headers["location"]
            assert answer.headers["etag"] == first[1].headers["etag"]
        elif first is not None and (alone(sent)[0] == 201 or _is_reused(answer)):
            event("reused")
            assert_error(answer, 422, "IDEMPOTENCY_KEY_REUSED", "Idempotency-Key")
        else:
            # No success stored yet (or ever) for the key: the request's own error.
            event("keyed error")
            _assert_own_error(sent, answer)
    return first


def judge(answers: list[tuple[Sent, httpx.Response]]) -> list[Sent]:
    """Judge every answer; the requests whose create was written (fresh successes)."""
    written: list[Sent] = []
    by_key: dict[tuple[str, str], list[tuple[Sent, httpx.Response]]] = {}
    for sent, answer in answers:
        assert answer.status_code not in (409, 500, 503), (sent, answer.text)
        if sent.idempotency_key is None:
            if alone(sent)[0] == 201:
                _assert_created(sent, answer)
                written.append(sent)
            else:
                _assert_own_error(sent, answer)
            continue
        by_key.setdefault((sent.owner, sent.idempotency_key), []).append((sent, answer))
    for records in by_key.values():
        first = judge_key(records)
        if first is not None:
            written.append(first[0])
    return written


# --- the app on one event loop -----------------------------------------------------------------


@asynccontextmanager
async def lifespan(app: Edge) -> AsyncIterator[None]:
    """The app started (its database opened) as a server would, and stopped after."""
    inbox: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    task = asyncio.create_task(app(scope, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    assert started["type"] == "lifespan.startup.complete", started
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
        await task


@dataclass
class Harness:
    """An in-process app over a database with the matrix world, kept on one event loop across
    hypothesis's examples, and an httpx client that calls it directly (ASGI)."""

    runner: asyncio.Runner
    client: httpx.AsyncClient
    url: str

    def send_all(self, requests: list[Sent]) -> list[httpx.Response]:
        """Every request at once (one task each), the answers in the requests' order."""

        async def send(sent: Sent) -> httpx.Response:
            headers = {**bearer(SECRETS[sent.key_id]), "Content-Type": "application/json"}
            if sent.idempotency_key is not None:
                headers["Idempotency-Key"] = sent.idempotency_key
            content = json.dumps(sent.body).encode()
            return await self.client.post("/v1/integrations", content=content, headers=headers)

        async def run() -> list[httpx.Response]:
            return list(await asyncio.gather(*(send(sent) for sent in requests)))

        return self.runner.run(run())

    def counts(self) -> dict[str, int]:
        """Every key's list `count`."""

        async def run() -> dict[str, int]:
            out: dict[str, int] = {}
            for key_id in KEY_IDS:
                headers = bearer(SECRETS[key_id])
                answer = await self.client.get("/v1/integrations?limit=1", headers=headers)
                assert answer.status_code == 200, answer.text
                out[key_id] = answer.json()["count"]
            return out

        return self.runner.run(run())


SECRETS = {key_id: key_secret(world_file("matrix"), key_id) for key_id in KEY_IDS}


@pytest.fixture
def harness(database_url: str) -> Iterator[Harness]:
    load_world(database_url, world_file("matrix"), key_secret=TEST_KEY_SECRET)
    app = create_app(make_settings(database_url))
    with asyncio.Runner() as runner:
        started = lifespan(app)
        runner.run(started.__aenter__())
        transport = httpx.ASGITransport(app=app)
        client = httpx.AsyncClient(transport=transport, base_url="http://cbstop.test")
        try:
            yield Harness(runner, client, database_url)
        finally:
            runner.run(client.aclose())
            runner.run(started.__aexit__(None, None, None))


# --- the property ------------------------------------------------------------------------------


def _added(before: list[tuple[Any, ...]], after: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The rows of `after` not in `before`, after checking that none of `before` went."""
    gone = Counter(before) - Counter(after)
    assert not gone, gone
    return sorted((Counter(after) - Counter(before)).elements())


def _sums(rows: list[tuple[Any, ...]]) -> Counter[str]:
    """An owner's maintained count: the sum of its shard rows (owner, shard, n)."""
    out: Counter[str] = Counter()
    for owner, _shard, n in rows:
        out[owner] += n
    return out


@EXAMPLES
@given(plan=plans)
def test_creates_sent_at_once_are_each_answered_as_if_alone(
    harness: Harness, plan: list[Step]
) -> None:
    tag = f"batch-{uuid.uuid4().hex[:12]}"
    requests = resolve(plan, tag)
    before, counts_before = snapshot(harness.url), harness.counts()

    answers = harness.send_all(requests)

    written = judge(list(zip(requests, answers, strict=True)))
    after, counts_after = snapshot(harness.url), harness.counts()
    event(f"{len(written)} of {len(requests)} written")
    made = {
        sent.body["name"]: answer.json()["id"]
        for sent, answer in zip(requests, answers, strict=True)
        if sent in written and answer.status_code == 201
    }
    assert len(set(made.values())) == len(written) == len(made)

    for table in set(before) - WRITTEN:
        assert after[table] == before[table], table
    # integrations: (id, organisation_id, partner_id, name, type, status, created_at, version)
    new = {row[0]: row for row in _added(before["integrations"], after["integrations"])}
    assert set(new) == set(made.values())
    for sent in written:
        row = new[made[sent.body["name"]]]
        body = sent.body
        expected = (body["organisation_id"], PARTNERS[body["organisation_id"]], body["name"])
        assert row[1:4] == expected, row
        assert row[4:6] == ("CUSTOM_ORDERS", body.get("status", "ENABLED")), row
    merchants = _added(before["integration_merchants"], after["integration_merchants"])
    assert sorted(merchants) == sorted(
        (made[s.body["name"]], position, merchant, s.body["organisation_id"])
        for s in written
        for position, merchant in enumerate(s.body["merchant_ids"])
    )
    # events: (id, created_at, type, organisation_id, partner_id, integration_id, ...)
    events = _added(before["events"], after["events"])
    assert sorted((e[2], e[5], e[8]) for e in events) == sorted(
        ("integration.created", made[s.body["name"]], s.idempotency_key) for s in written
    )
    stored = _added(before["idempotency_keys"], after["idempotency_keys"])
    assert sorted((row[0], row[1], row[4]) for row in stored) == sorted(
        (s.owner, s.idempotency_key, 201) for s in written if s.idempotency_key is not None
    )

    per_org = Counter(s.body["organisation_id"] for s in written)
    orgs_before = _sums(before["organisation_integration_counts"])
    orgs_after = _sums(after["organisation_integration_counts"])
    assert orgs_after - orgs_before == per_org
    assert orgs_before - orgs_after == Counter()
    per_partner = Counter(PARTNERS[o] for o in per_org.elements() if PARTNERS[o] is not None)
    partners_before = _sums(before["partner_integration_counts"])
    partners_after = _sums(after["partner_integration_counts"])
    assert partners_after - partners_before == per_partner
    assert partners_before - partners_after == Counter()
    for key_id in KEY_IDS:
        seen = sum(n for org, n in per_org.items() if org in KEYS[key_id][1])
        assert counts_after[key_id] == counts_before[key_id] + seen, key_id
