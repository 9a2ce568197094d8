"""Shared vocabulary of the events suites: waiting for events to be listed.

On PostgreSQL a write leaves its event unnumbered; the sequencer numbers it in the background
milliseconds after the write's answer, and only then is it listed (CONTRACT 3.4,
cbstop/events/sequencer.py). Tests wait for it with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

EVENTS = "/v1/events"


def list_all(
    client: Any, headers: Mapping[str, str], params: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Every event the key can see (with `params`' filters), newest first, across pages."""
    items: list[dict[str, Any]] = []
    wanted: dict[str, Any] = {"limit": 100, **(params or {})}
    while True:
        response = client.get(EVENTS, headers=dict(headers), params=wanted)
        assert response.status_code == 200, (response.status_code, response.text)
        body = response.json()
        items.extend(body["items"])
        if not body["has_more"]:
            return items
        wanted = {**wanted, "starting_after": body["items"][-1]["id"]}


def wait_for_events(
    client: Any,
    headers: Mapping[str, str],
    count: int,
    *,
    params: Mapping[str, Any] | None = None,
    timeout: float = 10.0,
) -> list[dict[str, Any]]:
    """The events the key can see (newest first, across pages), once at least `count` are
    listed; fails after `timeout` seconds with what was listed."""
    deadline = time.monotonic() + timeout
    while True:
        items = list_all(client, headers, params)
        if len(items) >= count:
            return items
        assert time.monotonic() < deadline, f"{len(items)} events listed, not {count}: {items}"
        time.sleep(0.01)
