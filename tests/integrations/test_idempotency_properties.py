"""Hypothesis: any interleaving of keyed creates, patches, retries and reuses over a few
Idempotency-Keys and two owners leaves the database as if each (owner, key) ran once
(CONTRACT 3.1).

An example is a list of groups of requests; a group's requests are sent together on threads
(released by a barrier), the groups one after the other. Every example names its keys and
integrations with a tag of its own, so examples share the database without seeing each other.
The model judges the answers of each (owner, key) from its one fresh success F, if any:

- at most one fresh (not replayed) success per (owner, key);
- a replay has F's fingerprint and F's status, bytes, `Location` and `ETag`, and comes no
  earlier than F's group; a request with F's fingerprint other than F is always a replay;
- 422 `IDEMPOTENCY_KEY_REUSED` exactly when the fingerprint differs from F's and it comes no
  earlier than F's group; a request in a group after F's is always a replay or REUSED;
- any other answer is the one the request gets without a key (the oracle below), and only
  before F stored its answer: errors store nothing.

Then the database: the example's integrations are exactly the fresh creates' (one per
(owner, key) whose F is a create), its stored keys exactly the (owner, key) with an F, each
integration ends as the last fresh write on it answered, and nothing else changed.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
from hypothesis import event, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tests.integrations.helpers import assert_error, auth, representation
from tests.integrations.test_properties import SETTINGS
from tests.support import query

OWNERS = ("organisation:org_a1", "partner_group:pgrp_a_admin")
HEADERS = {OWNERS[0]: auth("key_org_a1"), OWNERS[1]: auth("key_admin_a")}
VISIBLE = {OWNERS[0]: {"org_a1"}, OWNERS[1]: {"org_a1", "org_a2"}}
MERCHANTS = {"org_a1": {"mrch_a1_1", "mrch_a1_2"}, "org_a2": {"mrch_a2_1", "mrch_a2_2"}}
KEYS = 4
CREATES = 5  # create bodies, see _create_body
PATCHES = 4  # patch bodies, see _patch_body
EXAMPLES = settings(SETTINGS, max_examples=100)


# --- what is sent ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One generated request: `ref` picks an earlier request (retry, reuse) or target (patch)."""

    kind: str  # "create", "patch", "retry", "reuse", "twin"
    owner: int
    key: int
    choice: int
    ref: int


@dataclass(frozen=True)
class Sent:
    """A request resolved against the example: everything needed to send and judge it."""

    owner: str
    key: str
    method: str
    path: str
    body: dict[str, Any]
    content: bytes
    choice: int
    target_org: str | None = None  # a PATCH's target's organisation (None: no such integration)

    @property
    def fingerprint(self) -> tuple[str, str, str]:
        return self.method, self.path, json.dumps(self.body, sort_keys=True)


@dataclass
class Done:
    """A request sent, its group and its answer."""

    group: int
    sent: Sent
    answer: httpx.Response

    @property
    def replayed(self) -> bool:
        return "idempotent-replayed" in self.answer.headers

    @property
    def fresh_success(self) -> bool:
        return self.answer.status_code in (200, 201) and not self.replayed

    @property
    def reused(self) -> bool:
        return self.answer.status_code == 422 and '"IDEMPOTENCY_KEY_REUSED"' in self.answer.text


def _create_body(tag: str, choice: int) -> tuple[dict[str, Any], bytes]:
    """0: a plain body; 1: the same body, keys reordered and spaced (the same fingerprint);
    2: a disabled one; 3: one in org_a2 (404 for org_a1's key); 4: another organisation's
    merchant (422 INVALID_MERCHANT_IDS)."""
    bodies: list[dict[str, Any]] = [
        {
            "organisation_id": "org_a1",
            "name": f"{tag} n0",
            "type": "CUSTOM_ORDERS",
            "merchant_ids": ["mrch_a1_1"],
        },
        {
            "merchant_ids": ["mrch_a1_1"],
            "type": "CUSTOM_ORDERS",
            "name": f"{tag} n0",
            "organisation_id": "org_a1",
        },
        {
            "organisation_id": "org_a1",
            "name": f"{tag} n1",
            "type": "CUSTOM_ORDERS",
            "merchant_ids": ["mrch_a1_2", "mrch_a1_1"],
            "status": "DISABLED",
        },
        {
            "organisation_id": "org_a2",
            "name": f"{tag} n2",
            "type": "CUSTOM_ORDERS",
            "merchant_ids": ["mrch_a2_1"],
        },
        {
            "organisation_id": "org_a1",
            "name": f"{tag} n3",
            "type": "CUSTOM_ORDERS",
            "merchant_ids": ["mrch_a2_1"],
        },
    ]
    body = bodies[choice]
    if choice == 1:
        return body, json.dumps(body, indent=3, separators=(" ,", " : ")).encode()
    return body, json.dumps(body).encode()


def _patch_body(tag: str, choice: int) -> dict[str, Any]:
    return [
        {"name": f"{tag} r0"},
        {"name": f"{tag} r1"},
        {"status": "DISABLED"},
        {"status": "DISABLED", "name": f"{tag} r0"},
    ][choice]


steps = st.builds(
    Step,
    kind=st.sampled_from(["create", "create", "patch", "patch", "retry", "retry", "reuse", "twin"]),
    owner=st.integers(0, len(OWNERS) - 1),
    key=st.integers(0, KEYS - 1),
    choice=st.integers(0, 99),
    ref=st.integers(0, 99),
)
groups = st.lists(st.lists(steps, min_size=1, max_size=3), min_size=1, max_size=5)


class Example:
    """One example's requests, resolved group by group against what earlier groups made."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.tag = f"idem-{uuid.uuid4().hex[:12]}"
        self.done: list[Done] = []
        self.created: dict[str, str] = {}  # integration id -> organisation, seen in answers

    def _create(self, owner: str, key: str, choice: int) -> Sent:
        body, content = _create_body(self.tag, choice)
        return Sent(owner, key, "POST", "/v1/integrations", body, content, choice)

    def resolve(self, step: Step, group: list[Sent]) -> Sent:
        """The request a step makes; `group` holds the requests resolved before it in its group
        (a twin is sent alongside its original)."""
        owner, key = OWNERS[step.owner], f"{self.tag}-{step.key}"
        if step.kind == "twin" and group:
            return group[-1]
        if step.kind in ("retry", "reuse") and self.done:
            earlier = self.done[step.ref % len(self.done)].sent
            if step.kind == "retry":
                return earlier
            if earlier.method == "POST":  # (c + 2) % 5 never shares c's fingerprint
                return self._create(earlier.owner, earlier.key, (earlier.choice + 2) % CREATES)
            return self._create(earlier.owner, earlier.key, step.choice % CREATES)
        if step.kind == "patch":
            ids = sorted(self.created)
            target = ids[step.ref % len(ids)] if ids else f"int_{self.tag}_missing"
            body = _patch_body(self.tag, step.choice % PATCHES)
            path = f"/v1/integrations/{target}"
            content = json.dumps(body).encode()
            return Sent(owner, key, "PATCH", path, body, content, 0, self.created.get(target))
        return self._create(owner, key, step.choice % CREATES)

    def send(self, sent: Sent) -> httpx.Response:
        headers = {
            **HEADERS[sent.owner],
            "Idempotency-Key": sent.key,
            "Content-Type": "application/json",
        }
        return self.client.request(sent.method, sent.path, content=sent.content, headers=headers)

    def run(self, plan: list[list[Step]]) -> None:
        for number, group in enumerate(plan):
            requests: list[Sent] = []
            for step in group:
                requests.append(self.resolve(step, requests))
            answers = _all_at_once([partial(self.send, sent) for sent in requests])
            for sent, answer in zip(requests, answers, strict=True):
                self.done.append(Done(number, sent, answer))
                if sent.method == "POST" and answer.status_code == 201:
                    self.created[answer.json()["id"]] = sent.body["organisation_id"]


def _all_at_once(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """One call: run it. Several: on as many threads, released together by a barrier."""
    if len(calls) == 1:
        return [calls[0]()]
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], httpx.Response]) -> httpx.Response:
        barrier.wait(timeout=10)
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


# --- the model ---------------------------------------------------------------------------------


def unkeyed(sent: Sent) -> tuple[int, str | None]:
    """(status, error code) of the request as it would be answered without a key."""
    if sent.method == "POST":
        org = sent.body["organisation_id"]
        if org not in VISIBLE[sent.owner]:
            return 404, "NOT_FOUND"
        if not set(sent.body["merchant_ids"]) <= MERCHANTS[org]:
            return 422, "INVALID_MERCHANT_IDS"
        return 201, None
    if sent.target_org is None or sent.target_org not in VISIBLE[sent.owner]:
        return 404, "NOT_FOUND"
    return 200, None


def _assert_fresh_success(done: Done) -> None:
    sent, answer = done.sent, done.answer
    assert unkeyed(sent)[0] == answer.status_code, (sent, answer.text)
    body = answer.json()
    if sent.method == "POST":
        assert answer.headers["location"] == f"/v1/integrations/{body['id']}"
        assert answer.headers["etag"] == '"1"'
        assert body == representation(
            body["id"],
            sent.body["organisation_id"],
            sent.body["name"],
            "CUSTOM_ORDERS",
            sent.body.get("status", "ENABLED"),
            sent.body["merchant_ids"],
        )
        return
    assert "location" not in answer.headers
    assert answer.headers["etag"].strip('"').isdigit(), answer.headers
    assert sent.path == f"/v1/integrations/{body['id']}"
    assert {k: body[k] for k in sent.body} == sent.body


def check_key(records: list[Done]) -> Done | None:
    """Judge every answer of one (owner, key); the fresh success F, if there is one."""
    fresh = [d for d in records if d.fresh_success]
    assert len(fresh) <= 1, [(d.sent, d.answer.text) for d in fresh]
    first = fresh[0] if fresh else None
    if first is not None:
        _assert_fresh_success(first)
        event(f"fresh {first.sent.method}")
    for done in records:
        if done is first:
            continue
        answer, sent = done.answer, done.sent
        assert answer.status_code != 409, answer.text  # no request here is in flight for 5 s
        if first is not None and sent.fingerprint == first.sent.fingerprint:
            assert done.replayed, (sent, answer.status_code, answer.text)
        if done.replayed:
            assert first is not None, (sent, answer.text)
            event("replayed in F's group" if done.group == first.group else "replayed later")
            assert sent.fingerprint == first.sent.fingerprint
            assert done.group >= first.group
            assert answer.headers["idempotent-replayed"] == "true"
            assert answer.status_code == first.answer.status_code
            assert answer.content == first.answer.content
            assert answer.headers.get("location") == first.answer.headers.get("location")
            assert answer.headers.get("etag") == first.answer.headers.get("etag")
        elif done.reused:
            assert_error(answer, 422, "IDEMPOTENCY_KEY_REUSED", "Idempotency-Key")
            assert first is not None, (sent, answer.text)
            event("reused")
            assert sent.fingerprint != first.sent.fingerprint
            assert done.group >= first.group
        else:
            # Answered as without a key, so before any success was stored: an error.
            assert first is None or done.group <= first.group, (sent, answer.text)
            status, code = unkeyed(sent)
            assert code is not None, (sent, answer.status_code, answer.text)
            assert_error(answer, status, code)
            event("error before F" if first is not None else "error, no F")
    return first


def _final_state(client: TestClient, integration_id: str, writes: list[Done]) -> None:
    """The integration reads back as the last fresh write on it answered."""
    read = client.get(f"/v1/integrations/{integration_id}", headers=HEADERS[OWNERS[1]])
    assert read.status_code == 200, read.text
    last_group = max(d.group for d in writes)
    last = [d for d in writes if d.group == last_group]
    assert read.json() in [d.answer.json() for d in last], (read.json(), writes)
    if len(last) == 1:
        assert read.content == last[0].answer.content
        assert read.headers["etag"] == last[0].answer.headers["etag"]


def _rows_outside(url: str, tag: str) -> list[tuple[Any, ...]]:
    sql = "SELECT * FROM integrations WHERE name NOT LIKE ? ORDER BY id"
    return query(url, sql, f"{tag}%")


# --- the property ------------------------------------------------------------------------------


@EXAMPLES
@given(plan=groups)
def test_any_interleaving_of_keyed_writes_is_as_if_each_key_ran_once(
    client: TestClient, database_url: str, plan: list[list[Step]]
) -> None:
    example = Example(client)
    untouched = _rows_outside(database_url, example.tag)

    example.run(plan)

    by_key: dict[tuple[str, str], list[Done]] = {}
    for done in example.done:
        by_key.setdefault((done.sent.owner, done.sent.key), []).append(done)
    firsts = {owner_key: check_key(records) for owner_key, records in by_key.items()}
    stored = {k: f for k, f in firsts.items() if f is not None}

    created = {f.answer.json()["id"] for f in stored.values() if f.sent.method == "POST"}
    made = query(database_url, "SELECT id FROM integrations WHERE name LIKE ?", f"{example.tag}%")
    assert {row[0] for row in made} == created
    assert len(made) == len(created)
    keys = query(
        database_url,
        'SELECT owner, "key", status_code FROM idempotency_keys WHERE "key" LIKE ?',
        f"{example.tag}%",
    )
    assert sorted(keys) == sorted((o, k, f.answer.status_code) for (o, k), f in stored.items())
    assert _rows_outside(database_url, example.tag) == untouched

    for integration_id in created:
        writes = [f for f in stored.values() if f.answer.json()["id"] == integration_id]
        _final_state(client, integration_id, writes)
