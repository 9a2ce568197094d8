"""Client load for the fault suites: threads of GET/POST/PATCH against a real server, every
answer recorded with its timing, and every acknowledged write remembered for reading back."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

import httpx

from tests.reliability.processes import envelope_code


@dataclass(frozen=True)
class Outcome:
    """One request as the client saw it."""

    method: str
    path: str
    started: float
    seconds: float
    status: int | None = None
    code: str | None = None
    retry_after: str | None = None
    error: str | None = None

    def acceptable_in_outage(self) -> bool:
        """Success, or 503 SERVICE_UNAVAILABLE with Retry-After; nothing else."""
        if self.error is not None or self.status is None:
            return False
        if self.status in (200, 201):
            return True
        return self.status == 503 and self.code == "SERVICE_UNAVAILABLE" and bool(self.retry_after)


@dataclass
class Written:
    """An integration this client created (201), and the names it tried to give it."""

    id: str
    merchant_ids: list[str]
    acknowledged_name: str
    # Names sent after the last acknowledged one whose outcome is unknown (503 or no answer).
    uncertain_names: list[str] = field(default_factory=list)
    acknowledged_patches: int = 0


class Traffic:
    """`threads` clients, each creating, reading and renaming its own integrations."""

    def __init__(
        self, url: str, key: str, organisation: str, merchants: list[str], threads: int = 4
    ) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {key}"}
        self.organisation = organisation
        self.merchants = merchants
        self.outcomes: list[Outcome] = []
        self.written: list[Written] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)
        ]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def since(self, moment: float) -> list[Outcome]:
        """The outcomes of requests started at or after `moment` (time.monotonic)."""
        with self._lock:
            return [o for o in self.outcomes if o.started >= moment]

    def _call(
        self, client: httpx.Client, method: str, path: str, body: object | None
    ) -> tuple[Outcome, httpx.Response | None]:
        started = time.monotonic()
        try:
            response = client.request(method, path, json=body, headers=self.headers)
        except httpx.HTTPError as exc:
            seconds = time.monotonic() - started
            outcome = Outcome(method, path, started, seconds, error=f"{type(exc).__name__}: {exc}")
            return outcome, None
        seconds = time.monotonic() - started
        code = envelope_code(response) if response.status_code >= 400 else None
        retry_after = response.headers.get("retry-after")
        outcome = Outcome(method, path, started, seconds, response.status_code, code, retry_after)
        return outcome, response

    def _run(self, thread: int) -> None:
        mine: list[Written] = []
        counter = itertools.count()
        with httpx.Client(base_url=self.url, timeout=10.0) as client:
            while not self._stop.is_set():
                n = next(counter)
                step = n % 4
                if step == 0 or not mine:
                    name = f"outage t{thread} n{n}"
                    body = {
                        "organisation_id": self.organisation,
                        "name": name,
                        "type": "CUSTOM_ORDERS",
                        "merchant_ids": self.merchants,
                    }
                    outcome, response = self._call(client, "POST", "/v1/integrations", body)
                    if response is not None and response.status_code == 201:
                        created = response.json()
                        mine.append(Written(created["id"], created["merchant_ids"], name))
                elif step == 1:
                    outcome, _ = self._call(client, "GET", "/v1/integrations?limit=5", None)
                elif step == 2:
                    target = mine[n % len(mine)]
                    outcome, _ = self._call(client, "GET", f"/v1/integrations/{target.id}", None)
                else:
                    target = mine[n % len(mine)]
                    name = f"renamed t{thread} n{n}"
                    path = f"/v1/integrations/{target.id}"
                    outcome, response = self._call(client, "PATCH", path, {"name": name})
                    if response is not None and response.status_code == 200:
                        target.acknowledged_name = name
                        target.uncertain_names.clear()
                        target.acknowledged_patches += 1
                    else:
                        target.uncertain_names.append(name)
                with self._lock:
                    self.outcomes.append(outcome)
        with self._lock:
            self.written.extend(mine)
