"""The scenarios as wrk jobs: which server runs which Lua script with which arguments, and the
one request each must answer correctly before it is worth timing (see docs/performance.md)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.procs import BenchError, Server
from bench.report import (
    BARE_GET,
    BASELINE,
    BASELINE_SQLITE,
    CBSTOP,
    CBSTOP_SQLITE,
    HELLO,
    PEER,
    Measurement,
)
from bench.worlds import BenchWorld

LIST = "/v1/integrations?limit=20"

CBSTOP_SCENARIOS = (
    "get_one",
    "list_org",
    "list_admin",
    "list_desk",
    "list_deep",
    "create",
    "patch",
    "mix",
)
PEER_SCENARIOS = ("get_one", "list_org", "list_admin", "list_desk", "list_deep")
SQLITE_SCENARIOS = ("get_one", "list_org", "list_admin", "create")


@dataclass(frozen=True)
class Probe:
    """One request that must succeed before a scenario is worth timing."""

    method: str
    path: str
    key: str | None
    body: dict[str, Any] | None
    status: int


@dataclass
class Job:
    """One scenario on one server: the wrk script, its arguments, and its probe."""

    server: Server
    server_kind: str
    scenario: str
    script: str
    args: list[str]
    probe: Probe | None
    measurement: Measurement = field(init=False)

    def __post_init__(self) -> None:
        self.measurement = Measurement(0, self.server_kind, self.scenario)


def write_lines(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def build_jobs(
    servers: dict[str, Server], world: BenchWorld, work: Path, args: argparse.Namespace
) -> list[Job]:
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

    def scenario(kind: str, name: str) -> Job:
        server = servers[kind]
        if name == "get_one":
            probe = Probe("GET", first_get, world.org_key, None, 200)
            return Job(server, kind, name, "paths.lua", [world.org_key, get_paths], probe)
        if name in lists:
            key, path = lists[name]
            paths = write_lines(work / f"{name}.txt", [path])
            return Job(
                server, kind, name, "paths.lua", [key, paths], Probe("GET", path, key, None, 200)
            )
        if name == "create":
            probe = Probe("POST", "/v1/integrations", world.org_key, create_body, 201)
            args = [world.org_key, world.org_key_organisation, merchants]
            return Job(server, kind, name, "post.lua", args, probe)
        if name == "patch":
            probe = Probe("PATCH", first_patch, world.org_key, {"name": "bench probe"}, 200)
            return Job(server, kind, name, "patch.lua", [world.org_key, custom], probe)
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
    if BASELINE_SQLITE in servers:
        plan += [(BASELINE_SQLITE, s) for s in SQLITE_SCENARIOS]
    if PEER in servers:
        plan += [(PEER, s) for s in PEER_SCENARIOS]
    if BARE_GET in servers:
        plan.append((BARE_GET, "get_one"))
    if HELLO in servers:
        plan.append((HELLO, "hello"))
    if args.only is not None:
        plan = [
            (k, s) for k, s in plan if s in args.only or (k == HELLO and "get_one" in args.only)
        ]
    return [scenario(kind, name) for kind, name in plan]


def probe(jobs: list[Job]) -> None:
    """Every scenario's request once, checked, so a broken set-up fails loudly, not slowly."""
    with httpx.Client(timeout=30.0) as client:
        for job in jobs:
            check = job.probe
            if check is None:
                continue
            headers = {"Authorization": f"Bearer {check.key}"} if check.key else {}
            response = client.request(
                check.method, job.server.url + check.path, headers=headers, json=check.body
            )
            if response.status_code != check.status:
                raise BenchError(
                    f"{job.server_kind} {job.scenario}: {check.method} {check.path} answered "
                    f"{response.status_code}, expected {check.status}: {response.text[:200]}"
                )
