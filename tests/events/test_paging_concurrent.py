"""Paging through events while 8 writers create and patch: every traversal lists each event
at most once, newest first, and misses none of those older than the first it listed
(CONTRACT 3.4), on a real `cbstop serve` with two workers."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from cbstop.world.loader import load_world
from tests.events.test_recording import numbered
from tests.integrations.helpers import auth, create_body, world
from tests.reliability.processes import running
from tests.support import TEST_KEY_SECRET, query

WRITERS = 8
WRITE_SECONDS = 4.0
PAGE = 7  # small pages: many page boundaries for a write to fall between


def traverse(client: httpx.Client, headers: dict[str, str]) -> list[str]:
    """One client's walk through every page, following each answer's `Link`."""
    ids: list[str] = []
    url: str | None = f"/v1/events?limit={PAGE}"
    while url is not None:
        answer = client.get(url, headers=headers)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        ids += [event["id"] for event in body["items"]]
        link = answer.headers.get("link")
        assert (link is not None) == body["has_more"], (link, body["has_more"])
        url = None if link is None else link[link.index("<") + 1 : link.index(">")]
    return ids


def test_pages_never_skip_or_repeat_an_event_while_writes_go_on(database_url: str) -> None:
    load_world(database_url, world("matrix"), key_secret=TEST_KEY_SECRET)
    writer_key, reader_key = auth("key_org_a1"), auth("key_admin_a")
    with running(database_url, workers=2) as server:
        stop = time.monotonic() + WRITE_SECONDS
        failures: list[Any] = []

        def write(worker: int) -> None:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                n = 0
                while time.monotonic() < stop:
                    n += 1
                    made = client.post(
                        "/v1/integrations",
                        json=create_body(name=f"W{worker} {n}"),
                        headers=writer_key,
                    )
                    if made.status_code != 201:
                        failures.append(made.text)
                        return
                    renamed = client.patch(
                        f"/v1/integrations/{made.json()['id']}",
                        json={"name": f"W{worker} {n} renamed"},
                        headers=writer_key,
                    )
                    if renamed.status_code != 200:
                        failures.append(renamed.text)
                        return

        writers = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
        for thread in writers:
            thread.start()
        traversals: list[list[str]] = []
        with httpx.Client(base_url=server.url, timeout=30) as reader:
            while any(thread.is_alive() for thread in writers) or not traversals:
                traversals.append(traverse(reader, reader_key))
        for thread in writers:
            thread.join()
        assert failures == []
    numbered(database_url)
    seq = dict(query(database_url, "SELECT id, seq FROM events"))
    assert len(seq) > 2 * WRITERS, "the writers wrote"
    moving = [t for t in traversals if t and len(t) < len(seq)]
    assert moving, "some traversal ran while events were being written"
    for ids in traversals:
        assert len(set(ids)) == len(ids), "an event was listed twice"
        order = [seq[i] for i in ids]
        assert order == sorted(order, reverse=True), "not newest first"
        if ids:
            # Nothing older than the first event listed is missing.
            assert set(ids) == {i for i, s in seq.items() if s <= order[0]}
