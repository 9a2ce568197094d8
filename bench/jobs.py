"""The scenarios as wrk jobs: which server runs which Lua script with which arguments, and the
requests each must answer correctly before it is worth timing (see docs/performance.md)."""

from __future__ import annotations

import argparse
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.procs import BenchError, Server, log
from bench.report import (
    BARE_GET,
    BARE_WRITE,
    BASELINE,
    BASELINE_SQLITE,
    CBSTOP,
    CBSTOP_LIMITS,
    CBSTOP_REDIS,
    CBSTOP_SQLITE,
    CBSTOP_SQLITE_LIMITS,
    CBSTOP_SQLITE_REDIS,
    GET_LIMITS,
    GET_REDIS,
    HELLO,
    PEER,
    Measurement,
)
from bench.worlds import BenchWorld
from bench.wrk import WrkResult

LIST = "/v1/integrations?limit=20"

CBSTOP_SCENARIOS = (
    "get_one",
    "list_org",
    "list_admin",
    "list_desk",
    "list_deep",
    "create",
    "post_keyed",
    "post_replay",
    "patch",
    "patch_if_match",
    "patch_keyed",
    "mix",
    "events_page",
    "events_page_admin",
)
PEER_SCENARIOS = ("get_one", "list_org", "list_admin", "list_desk", "list_deep")
SQLITE_SCENARIOS = (
    "get_one",
    "list_org",
    "list_admin",
    "create",
    "post_keyed",
    "patch_keyed",
    "events_page",
    "events_page_admin",
)
# Issue 10's safe writes (CONTRACT 3.1, 3.2). A baseline build from before them cannot answer
# as these checks want; on a baseline server such a job is dropped (logged), not fatal.
SAFE_WRITE_SCENARIOS = ("post_keyed", "post_replay", "patch_if_match", "patch_keyed")
# Issue 13's audit trail (CONTRACT 3.4): a page of `GET /v1/events`, newest first, over the
# events bench/events.py wrote after the load; dropped like the safe writes on a baseline
# build from before it.
EVENTS = "/v1/events?limit=20"
EVENT_SCENARIOS = ("events_page", "events_page_admin")
# What a baseline build may be too old to serve.
NEWER_SCENARIOS = SAFE_WRITE_SCENARIOS + EVENT_SCENARIOS
# How many stored answers post_replay sends again in turn.
REPLAYS = 200
REPLAYED = "idempotent-replayed"
BASELINES = (BASELINE, BASELINE_SQLITE)
# Issue 12: GET one on a server of the same build and database with rate limits on, at a quota
# the benchmark never reaches (at most one request per microsecond is all a limit may say), and
# the default auth-failure budget. Every other server runs with both limits off.
QUOTA = "60000000/60"
AUTH_FAILURES = "20/60"
QUOTA_POLICY = '"default";q=60000000;w=60'
# For a server of the plan, the server each limits scenario runs on.
LIMITED = {
    CBSTOP: {GET_LIMITS: CBSTOP_LIMITS, GET_REDIS: CBSTOP_REDIS},
    CBSTOP_SQLITE: {GET_LIMITS: CBSTOP_SQLITE_LIMITS, GET_REDIS: CBSTOP_SQLITE_REDIS},
}
LIMIT_SCENARIOS = (GET_LIMITS, GET_REDIS)


@dataclass(frozen=True)
class Probe:
    """One request that must succeed before a scenario is worth timing.

    `replayed`: True if the answer must carry `Idempotent-Replayed: true`, False if it must not
    carry the header, None if it does not matter; `etag`: whether it must carry an `ETag`;
    `policy`: the `RateLimit-Policy` it must carry (None: none, the limits are off).
    """

    method: str
    path: str
    key: str | None
    body: dict[str, Any] | None
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    replayed: bool | None = None
    etag: bool = False
    policy: str | None = None

    def send(self, client: httpx.Client, job: Job) -> httpx.Response:
        """The request, its answer checked; a BenchError says what was wrong."""
        headers = dict(self.headers)
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        content = None
        if self.body is not None:
            headers["Content-Type"] = "application/json"
            content = orjson.dumps(self.body)
        response = client.request(
            self.method, job.server.url + self.path, headers=headers, content=content
        )
        said = f"{job.server_kind} {job.scenario}: {self.method} {self.path} {self.headers or ''}"
        if response.status_code != self.status:
            raise BenchError(
                f"{said} answered {response.status_code}, expected {self.status}: "
                f"{response.text[:200]}"
            )
        replayed = response.headers.get_list(REPLAYED)
        if self.replayed is True and replayed != ["true"]:
            raise BenchError(f"{said}: Idempotent-Replayed is {replayed}, expected ['true']")
        if self.replayed is False and replayed:
            raise BenchError(f"{said}: a fresh answer carries Idempotent-Replayed {replayed}")
        if self.etag and not response.headers.get("etag"):
            raise BenchError(f"{said}: no ETag in the {response.status_code} answer")
        policy = response.headers.get("ratelimit-policy")
        if policy != self.policy:
            raise BenchError(
                f"{said}: RateLimit-Policy is {policy!r}, expected {self.policy!r} "
                f"(rate limits {'on' if self.policy else 'off'})"
            )
        return response


@dataclass
class Job:
    """One scenario on one server: the wrk script, its arguments, and its probe."""

    server: Server
    server_kind: str
    scenario: str
    script: str
    args: list[str]
    probe: Probe | None
    # Run before the probe: what the scenario needs in the database, and the checks one probe
    # cannot make (bench/jobs.py: _prepare_replays, _check_if_match).
    prepare: Callable[[httpx.Client, Job], None] | None = None
    # (api key, list path) whose `count` must be the same after every run of the job: a
    # scenario that must write nothing.
    unchanged_count: tuple[str, str] | None = None
    # Run after the probe and after every run (with its result): the limits scenarios' proof
    # that the limits were on and refused nothing (bench/jobs.py: limits_checker).
    check: Callable[[httpx.Client, Job, WrkResult | None], None] | None = None
    measurement: Measurement = field(init=False)

    @property
    def probe_path(self) -> str:
        assert self.probe is not None
        return self.probe.path

    @property
    def probe_headers(self) -> dict[str, str]:
        assert self.probe is not None and self.probe.key is not None
        return {"Authorization": f"Bearer {self.probe.key}"}

    def __post_init__(self) -> None:
        self.measurement = Measurement(0, self.server_kind, self.scenario)


def write_lines(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def build_jobs(
    servers: dict[str, Server],
    world: BenchWorld,
    work: Path,
    args: argparse.Namespace,
    redis_sees: Callable[[Callable[[], object]], bool] | None = None,
) -> list[Job]:
    """The jobs of every scenario of every server in `servers`; `redis_sees(request)` sends a
    request while watching Redis and says whether a command under the run's prefix went by
    (needed when the Redis scenario runs)."""
    get_paths = write_lines(
        work / "get_paths.txt", [f"/v1/integrations/{i}" for i in world.org_key_integrations]
    )
    ids = write_lines(work / "ids.txt", world.org_key_integrations)
    custom = write_lines(work / "custom_ids.txt", world.org_key_custom_integrations)
    deep = min(args.deep_offset, max(0, world.admin_scope - 20))
    lists = {
        "list_org": (world.org_key, LIST),
        "list_admin": (world.admin_key, LIST),
        "list_desk": (world.desk_key, LIST),
        "list_deep": (world.admin_key, f"{LIST}&offset={deep}"),
    }
    merchants = ",".join(world.org_key_merchants)
    create_body = {
        "organisation_id": world.org_key_organisation,
        "name": "bench probe",
        "type": "CUSTOM_ORDERS",
        "merchant_ids": world.org_key_merchants,
    }
    first_get = f"/v1/integrations/{world.org_key_integrations[0]}"
    first_patch = f"/v1/integrations/{world.org_key_custom_integrations[0]}"
    threads, connections = args.threads, max(args.connections, args.threads)
    # patch_if_match: each wrk thread needs an id for every one of its connections, and one
    # more (bench/lua/patch_if_match.lua).
    per_thread = -(-connections // threads) + 1
    if_match_fits = len(world.org_key_custom_integrations) // threads >= per_thread

    def scenario(kind: str, name: str) -> Job:
        server = servers[kind]
        if name == "get_one":
            probe = Probe("GET", first_get, world.org_key, None, 200)
            return Job(server, kind, name, "paths.lua", [world.org_key, get_paths], probe)
        if name in LIMIT_SCENARIOS:
            # Measured as a scenario of `kind`, on its twin with the limits on.
            limited = servers[LIMITED[kind][name]]
            probe = Probe("GET", first_get, world.org_key, None, 200, policy=QUOTA_POLICY)
            watch = None
            if name == GET_REDIS:
                if redis_sees is None:
                    raise ValueError(f"{name} needs redis_sees")
                watch = redis_sees
            return Job(
                limited,
                kind,
                name,
                "paths.lua",
                [world.org_key, get_paths],
                probe,
                check=limits_checker(watch),
            )
        if name in lists:
            key, path = lists[name]
            paths = write_lines(work / f"{name}.txt", [path])
            return Job(
                server, kind, name, "paths.lua", [key, paths], Probe("GET", path, key, None, 200)
            )
        if name in EVENT_SCENARIOS:
            key = world.org_key if name == "events_page" else world.admin_key
            paths = write_lines(work / f"{name}.txt", [EVENTS])
            probe = Probe("GET", EVENTS, key, None, 200)
            return Job(
                server, kind, name, "paths.lua", [key, paths], probe, check=events_page_checker()
            )
        if name == "create":
            probe = Probe("POST", "/v1/integrations", world.org_key, create_body, 201)
            args = [world.org_key, world.org_key_organisation, merchants]
            return Job(server, kind, name, "post.lua", args, probe)
        if name == "post_keyed":
            # A fresh key: 201, not a replay, with its ETag.
            fresh = {"Idempotency-Key": f"bench-probe-{secrets.token_hex(8)}"}
            probe = Probe(
                "POST", "/v1/integrations", world.org_key, create_body, 201, fresh, False, True
            )
            args = [world.org_key, world.org_key_organisation, merchants]
            return Job(server, kind, name, "post_keyed.lua", args, probe)
        if name == "post_replay":
            # The replays' file is written by _prepare_replays, which stores its answers first;
            # the probe is the first of them again: the stored 201, replayed.
            replays = work / f"{kind}_replays.txt"
            keys = [f"bench-replay-{secrets.token_hex(8)}-{i}" for i in range(REPLAYS)]
            bodies = [{**create_body, "name": f"bench replay {i}"} for i in range(REPLAYS)]
            first = {"Idempotency-Key": keys[0]}
            probe = Probe(
                "POST", "/v1/integrations", world.org_key, bodies[0], 201, first, True, True
            )
            args = [world.org_key, str(replays)]
            return Job(
                server,
                kind,
                name,
                "post_replay.lua",
                args,
                probe,
                prepare=_replays_preparer(world.org_key, keys, bodies, replays),
                unchanged_count=(world.org_key, "/v1/integrations?limit=1"),
            )
        if name == "patch":
            probe = Probe("PATCH", first_patch, world.org_key, {"name": "bench probe"}, 200)
            return Job(server, kind, name, "patch.lua", [world.org_key, custom], probe)
        if name == "patch_keyed":
            # A fresh key: 200, not a replay, with its ETag.
            fresh = {"Idempotency-Key": f"bench-probe-{secrets.token_hex(8)}"}
            body = {"name": "bench probe"}
            probe = Probe("PATCH", first_patch, world.org_key, body, 200, fresh, False, True)
            return Job(server, kind, name, "patch_keyed.lua", [world.org_key, custom], probe)
        if name == "patch_if_match":
            star = {"If-Match": "*"}
            body = {"name": "bench probe"}
            probe = Probe("PATCH", first_patch, world.org_key, body, 200, star, None, True)
            args = [world.org_key, custom, str(threads)]
            return Job(
                server,
                kind,
                name,
                "patch_if_match.lua",
                args,
                probe,
                prepare=_if_match_checker(world.org_key, first_patch),
            )
        if name == "mix":
            args = [world.org_key, ids, custom, world.org_key_organisation, merchants, LIST]
            return Job(server, kind, name, "mix.lua", args, None)
        if name == "hello":
            paths = write_lines(work / "hello.txt", ["/"])
            return Job(
                server, kind, name, "paths.lua", ["none", paths], Probe("GET", "/", None, None, 200)
            )
        raise ValueError(name)

    plan: list[tuple[str, str]] = []
    if CBSTOP in servers:
        plan += [(CBSTOP, s) for s in CBSTOP_SCENARIOS]
    if BASELINE in servers:
        plan += [(BASELINE, s) for s in CBSTOP_SCENARIOS]
    if CBSTOP_SQLITE in servers:
        plan += [(CBSTOP_SQLITE, s) for s in SQLITE_SCENARIOS]
    for kind, twins in LIMITED.items():
        plan += [(kind, s) for s, limited in twins.items() if limited in servers]
    if BASELINE_SQLITE in servers:
        plan += [(BASELINE_SQLITE, s) for s in SQLITE_SCENARIOS]
    if PEER in servers:
        plan += [(PEER, s) for s in PEER_SCENARIOS]
    if BARE_GET in servers:
        plan.append((BARE_GET, "get_one"))
    if BARE_WRITE in servers:
        plan.append((BARE_WRITE, "create"))
    if HELLO in servers:
        plan.append((HELLO, "hello"))
    if args.only is not None:
        plan = [
            (k, s) for k, s in plan if s in args.only or (k == HELLO and "get_one" in args.only)
        ]
    if not if_match_fits and any(s == "patch_if_match" for _, s in plan):
        log(
            f"patch_if_match skipped: {len(world.org_key_custom_integrations)} ids cannot give "
            f"each of {connections} connections its own (--threads {threads})"
        )
        plan = [(k, s) for k, s in plan if s != "patch_if_match"]
    return [scenario(kind, name) for kind, name in plan]


def _replays_preparer(
    key: str, keys: list[str], bodies: list[dict[str, Any]], path: Path
) -> Callable[[httpx.Client, Job], None]:
    """Store post_replay's answers: each key's POST once, fresh; its file of key TAB body."""

    def prepare(client: httpx.Client, job: Job) -> None:
        def post(i: int, replayed: bool) -> httpx.Response:
            headers = {"Idempotency-Key": keys[i]}
            check = Probe("POST", "/v1/integrations", key, bodies[i], 201, headers, replayed, True)
            return check.send(client, job)

        first = post(0, False)
        for i in range(1, len(keys)):
            post(i, False)
        lines = [f"{k}\t{orjson.dumps(b).decode()}" for k, b in zip(keys, bodies, strict=True)]
        write_lines(path, lines)
        again = post(0, True)
        for name in ("location", "etag"):
            if again.headers.get(name) != first.headers.get(name):
                raise BenchError(
                    f"{job.server_kind} {job.scenario}: the replay's {name} is "
                    f"{again.headers.get(name)!r}, the first answer's {first.headers.get(name)!r}"
                )
        if again.content != first.content:
            raise BenchError(
                f"{job.server_kind} {job.scenario}: the replay's body differs from the first: "
                f"{again.text[:200]} / {first.text[:200]}"
            )

    return prepare


def _if_match_checker(key: str, path: str) -> Callable[[httpx.Client, Job], None]:
    """patch_if_match's chain on one id: `*` matches, then the tag of each 200 matches and a
    new one comes back, and a stale tag is a 412 carrying the current one."""

    def check(client: httpx.Client, job: Job) -> None:
        def patch(name: str, if_match: str, status: int) -> httpx.Response:
            headers = {"If-Match": if_match}
            return Probe("PATCH", path, key, {"name": name}, status, headers, None, True).send(
                client, job
            )

        tag = patch("bench check 1", "*", 200).headers["etag"]
        new = patch("bench check 2", tag, 200).headers["etag"]
        if new == tag:
            raise BenchError(f"{job.server_kind} {job.scenario}: a rename kept the ETag {tag}")
        current = patch("bench check 3", tag, 412).headers["etag"]
        if current != new:
            raise BenchError(
                f"{job.server_kind} {job.scenario}: the 412 carries ETag {current}, not {new}"
            )

    return check


def metric_total(text: str, name: str) -> float:
    """The sum of a counter's samples (every label set) in a Prometheus exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def limits_checker(
    redis_sees: Callable[[Callable[[], object]], bool] | None,
) -> Callable[[httpx.Client, Job, WrkResult | None], None]:
    """That a limits scenario measured what it claims: no answer but 2xx (no 429) and no
    refusal in the server's metrics; with Redis, not one request served without it, and (once,
    before the runs) a request seen reaching Redis under the run's prefix.

    The keys themselves cannot show it: at a quota this large a key lives a millisecond.
    """

    def check(client: httpx.Client, job: Job, result: WrkResult | None) -> None:
        said = f"{job.server_kind} {job.scenario} ({job.server.name})"
        if result is not None and (result.status_errors or result.socket_errors):
            raise BenchError(
                f"{said}: {result.status_errors} answers were not 2xx and {result.socket_errors} "
                f"failed of {result.requests}; the quota must never be reached"
            )
        metrics = client.get(job.server.url + "/metrics")
        if metrics.status_code != 200:
            raise BenchError(f"{said}: /metrics answered {metrics.status_code}")
        refused = metric_total(metrics.text, "cbstop_rate_limited_total")
        if refused:
            raise BenchError(f"{said}: cbstop_rate_limited_total is {refused:g}, expected 0")
        if redis_sees is not None:
            unlimited = metric_total(metrics.text, "cbstop_rate_limit_unavailable_total")
            if unlimited:
                raise BenchError(
                    f"{said}: {unlimited:g} requests were served without Redis "
                    "(cbstop_rate_limit_unavailable_total); see the server's log"
                )
            if result is None and not redis_sees(
                lambda: client.get(job.server.url + job.probe_path, headers=job.probe_headers)
            ):
                raise BenchError(f"{said}: a request sent no command under the run's prefix")

    return check


def events_page_checker() -> Callable[[httpx.Client, Job, WrkResult | None], None]:
    """That an events scenario pages over events (once, before the runs): a full page of
    `limit` events, newest first, with more behind it. An empty page would be measured as
    fast as a page can be, and prove nothing."""

    def check(client: httpx.Client, job: Job, result: WrkResult | None) -> None:
        if result is not None:
            return
        said = f"{job.server_kind} {job.scenario}: GET {EVENTS}"
        page = client.get(job.server.url + EVENTS, headers=job.probe_headers).json()
        items = page.get("items", [])
        if len(items) != 20 or page.get("has_more") is not True:
            raise BenchError(
                f"{said}: {len(items)} events, has_more {page.get('has_more')!r}; expected a "
                "full page with more (were the events generated? bench/events.py)"
            )
        times = [item["created_at"] for item in items]
        if times != sorted(times, reverse=True):
            raise BenchError(f"{said}: not newest first: {times}")

    return check


def scope_count(job: Job) -> int | None:
    """The `count` that must not change across a run of `job` (None: the job may write)."""
    if job.unchanged_count is None:
        return None
    key, path = job.unchanged_count
    headers = {"Authorization": f"Bearer {key}"}
    response = httpx.get(job.server.url + path, headers=headers, timeout=30.0)
    if response.status_code != 200:
        raise BenchError(f"{job.server_kind} {job.scenario}: GET {path} {response.status_code}")
    count: int = response.json()["count"]
    return count


def settled_count(job: Job, interval: float = 0.2, patience: float = 5.0) -> int | None:
    """`scope_count` once the writes of the run before have landed: wrk stops with requests
    still in flight (a create may be answered after wrk has gone), so the count is read until
    two reads `interval` apart agree, for `patience` seconds at most."""
    count = scope_count(job)
    if count is None:
        return None
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        time.sleep(interval)
        again = scope_count(job)
        if again == count:
            break
        count = again
    return count


def client_for_checks() -> httpx.Client:
    """The client of the checks (tests/bench/test_jobs.py gives it a fake API)."""
    return httpx.Client(timeout=30.0)


def probe(jobs: list[Job]) -> list[Job]:
    """Every scenario's checks once, so a broken set-up fails loudly, not slowly: the jobs to run.

    A baseline build's safe-write or events scenario that fails its checks is dropped (it
    predates them); any other failure is fatal.
    """
    kept: list[Job] = []
    with client_for_checks() as client:
        for job in jobs:
            try:
                if job.prepare is not None:
                    job.prepare(client, job)
                if job.probe is not None:
                    job.probe.send(client, job)
                if job.check is not None:
                    job.check(client, job, None)
            except BenchError as exc:
                if job.server_kind in BASELINES and job.scenario in NEWER_SCENARIOS:
                    log(f"dropped, the baseline build cannot run it: {exc}")
                    continue
                raise
            kept.append(job)
    return kept
