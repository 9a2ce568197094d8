"""Benchmark worlds: deterministic world files (CONTRACT 2.3) of a chosen number of integrations.

Layout of a world of N integrations:

- one big partner `ptr_bench` owning P organisations, P = clamp(N // 100, 1000, 10000): the
  1,000,000 world has 10,000 organisations of 100 integrations each;
- its admin group `pgrp_bench_admin` (scope: every integration of the partner, about N) and a
  non-admin group `pgrp_bench_desk` with 1,000 assigned organisations;
- the organisation-key organisation `org_b00000` (one of the big partner's, assigned to the
  desk), owning min(100, N // 10) integrations spread through the creation order;
- out-of-scope data, so that scope filters really filter: a small partner `ptr_other` and a
  direct organisation with no partner, sharing min(20, N // 50) integrations;
- two merchants per organisation; integrations are 90 % CUSTOM_ORDERS (the rest STRIPE,
  ADYEN, SHOPIFY), 90 % ENABLED, with one or two of their organisation's merchants.

The file is written streaming (the 1,000,000 world is ~250 MB), and `BenchWorld` carries what
the harness needs to aim requests: the keys, the ids in the organisation key's scope.

    python -m bench.worlds --integrations 100000 -o /tmp/world-100k.json
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

# Bump when the layout changes, so cached world files are regenerated.
GENERATOR_VERSION = 1

PARTNER = "ptr_bench"
OTHER_PARTNER = "ptr_other"
ADMIN_GROUP = "pgrp_bench_admin"
DESK_GROUP = "pgrp_bench_desk"
OTHER_ADMIN_GROUP = "pgrp_other_admin"
KEY_ORG_ORGANISATION = "org_b00000"
DIRECT_ORGANISATION = "org_direct"
DESK_ORGANISATIONS = 1000
MIN_PARTNER_ORGANISATIONS = 1000
MAX_PARTNER_ORGANISATIONS = 10_000
OTHER_ORGANISATIONS = 10
MERCHANTS_PER_ORGANISATION = 2

# Fixed secrets: the world is public test data, never a production key.
ORG_KEY = "cbs_bench_org_key_000000000000000000000"
ADMIN_KEY = "cbs_bench_admin_key_0000000000000000000"
DESK_KEY = "cbs_bench_desk_key_00000000000000000000"
OTHER_KEY = "cbs_bench_other_key_0000000000000000000"

OTHER_TYPES = ("STRIPE", "ADYEN", "SHOPIFY")


@dataclass(frozen=True)
class BenchWorld:
    """What the harness needs to know about a generated world."""

    integrations: int
    partner_organisations: int
    org_key: str = ORG_KEY
    admin_key: str = ADMIN_KEY
    desk_key: str = DESK_KEY
    org_key_organisation: str = KEY_ORG_ORGANISATION
    org_key_merchants: list[str] = field(default_factory=list)
    # Every integration of the organisation key's organisation, and the CUSTOM_ORDERS ones
    # among them (the only ones PATCH accepts).
    org_key_integrations: list[str] = field(default_factory=list)
    org_key_custom_integrations: list[str] = field(default_factory=list)
    admin_scope: int = 0
    desk_scope: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BenchWorld:
        return cls(**data)


def partner_organisations(n: int) -> int:
    """How many organisations the big partner owns in a world of n integrations."""
    return max(MIN_PARTNER_ORGANISATIONS, min(MAX_PARTNER_ORGANISATIONS, n // 100))


def _org_id(i: int) -> str:
    return f"org_b{i:05d}"


def _merchant_ids(org: str) -> list[str]:
    suffix = org.removeprefix("org_")
    return [f"mrch_{suffix}_{j}" for j in range(MERCHANTS_PER_ORGANISATION)]


class _Plan:
    """The world of n integrations, section by section; integrations are generated lazily."""

    def __init__(self, n: int, seed: int) -> None:
        if n < 1:
            raise ValueError("a world needs at least one integration")
        self.n = n
        self.seed = seed
        self.p = partner_organisations(n)
        self.extras = min(20, n // 50)
        self.big = n - self.extras
        self.key_org_count = max(1, min(100, self.big // 10))
        self.other_orgs = [f"org_o{i:02d}" for i in range(OTHER_ORGANISATIONS)]

    def partners(self) -> list[dict[str, Any]]:
        return [
            {"id": PARTNER, "name": "Bench Payments"},
            {"id": OTHER_PARTNER, "name": "Other Payments"},
        ]

    def partner_groups(self) -> list[dict[str, Any]]:
        return [
            {"id": ADMIN_GROUP, "partner_id": PARTNER, "name": "Admins", "is_admin": True},
            {
                "id": DESK_GROUP,
                "partner_id": PARTNER,
                "name": "Desk",
                "is_admin": False,
                "organisation_ids": [_org_id(i) for i in range(DESK_ORGANISATIONS)],
            },
            {
                "id": OTHER_ADMIN_GROUP,
                "partner_id": OTHER_PARTNER,
                "name": "Admins",
                "is_admin": True,
            },
        ]

    def organisation_ids(self) -> list[str]:
        return [_org_id(i) for i in range(self.p)] + self.other_orgs + [DIRECT_ORGANISATION]

    def organisations(self) -> Iterator[dict[str, Any]]:
        for i in range(self.p):
            yield {"id": _org_id(i), "name": f"Bench organisation {i}", "partner_id": PARTNER}
        for i, org in enumerate(self.other_orgs):
            yield {"id": org, "name": f"Other organisation {i}", "partner_id": OTHER_PARTNER}
        yield {"id": DIRECT_ORGANISATION, "name": "Direct customer", "partner_id": None}

    def merchants(self) -> Iterator[dict[str, Any]]:
        for org in self.organisation_ids():
            for j, mid in enumerate(_merchant_ids(org)):
                yield {"id": mid, "organisation_id": org, "name": f"{org} merchant {j}"}

    def _owners(self) -> Iterator[str]:
        """The owning organisation of each integration, in creation order."""
        step = self.big // self.key_org_count
        placed = 0
        rest = 0
        for idx in range(self.big):
            if idx % step == 0 and placed < self.key_org_count:
                placed += 1
                yield KEY_ORG_ORGANISATION
            else:
                yield _org_id(1 + rest % (self.p - 1))
                rest += 1
        outside = [*self.other_orgs, DIRECT_ORGANISATION]
        for idx in range(self.extras):
            yield outside[idx % len(outside)]

    def integrations(self) -> Iterator[dict[str, Any]]:
        rng = random.Random(self.seed)
        for idx, org in enumerate(self._owners()):
            roll = rng.random()
            kind = "CUSTOM_ORDERS" if roll < 0.9 else OTHER_TYPES[int(roll * 100) % 3]
            merchants = _merchant_ids(org)
            count = 1 + rng.getrandbits(1)
            yield {
                "id": f"int_{rng.getrandbits(96):024x}",
                "organisation_id": org,
                "name": f"Integration {idx}",
                "type": kind,
                "status": "ENABLED" if rng.random() < 0.9 else "DISABLED",
                "merchant_ids": merchants[:count],
            }

    def api_keys(self) -> list[dict[str, Any]]:
        return [
            {"id": "key_bench_org", "secret": ORG_KEY, "organisation_id": KEY_ORG_ORGANISATION},
            {"id": "key_bench_admin", "secret": ADMIN_KEY, "partner_group_id": ADMIN_GROUP},
            {"id": "key_bench_desk", "secret": DESK_KEY, "partner_group_id": DESK_GROUP},
            {"id": "key_other_admin", "secret": OTHER_KEY, "partner_group_id": OTHER_ADMIN_GROUP},
        ]


class _Collector:
    """Builds the BenchWorld summary while integrations stream past."""

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan
        self.ids: list[str] = []
        self.custom: list[str] = []
        self.admin = 0
        self.desk = 0
        self.desk_orgs = {_org_id(i) for i in range(DESK_ORGANISATIONS)}

    def see(self, integration: dict[str, Any]) -> None:
        org = integration["organisation_id"]
        if org.startswith("org_b"):
            self.admin += 1
            if org in self.desk_orgs:
                self.desk += 1
        if org == KEY_ORG_ORGANISATION:
            self.ids.append(integration["id"])
            if integration["type"] == "CUSTOM_ORDERS":
                self.custom.append(integration["id"])

    def world(self) -> BenchWorld:
        return BenchWorld(
            integrations=self.plan.n,
            partner_organisations=self.plan.p,
            org_key_merchants=_merchant_ids(KEY_ORG_ORGANISATION),
            org_key_integrations=self.ids,
            org_key_custom_integrations=self.custom,
            admin_scope=self.admin,
            desk_scope=self.desk,
        )


def generate_world(n: int, seed: int = 0) -> tuple[dict[str, Any], BenchWorld]:
    """The whole world of n integrations as a dict (for tests and small sizes)."""
    plan = _Plan(n, seed)
    collector = _Collector(plan)
    integrations = []
    for integration in plan.integrations():
        collector.see(integration)
        integrations.append(integration)
    world = {
        "partners": plan.partners(),
        "partner_groups": plan.partner_groups(),
        "organisations": list(plan.organisations()),
        "merchants": list(plan.merchants()),
        "integrations": integrations,
        "api_keys": plan.api_keys(),
    }
    return world, collector.world()


def _write_array(out: IO[bytes], name: str, items: Iterator[dict[str, Any]], *, last: bool) -> None:
    out.write(b'"' + name.encode() + b'": [')
    first = True
    for item in items:
        out.write(b"\n" if first else b",\n")
        out.write(orjson.dumps(item))
        first = False
    out.write(b"\n]" + (b"\n" if last else b",\n"))


def write_world(n: int, path: Path, seed: int = 0) -> BenchWorld:
    """Write the world of n integrations to `path`, streaming; return its summary."""
    plan = _Plan(n, seed)
    collector = _Collector(plan)

    def integrations() -> Iterator[dict[str, Any]]:
        for integration in plan.integrations():
            collector.see(integration)
            yield integration

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as out:
        out.write(b"{\n")
        _write_array(out, "partners", iter(plan.partners()), last=False)
        _write_array(out, "partner_groups", iter(plan.partner_groups()), last=False)
        _write_array(out, "organisations", plan.organisations(), last=False)
        _write_array(out, "merchants", plan.merchants(), last=False)
        _write_array(out, "integrations", integrations(), last=False)
        _write_array(out, "api_keys", iter(plan.api_keys()), last=True)
        out.write(b"}\n")
    tmp.replace(path)
    return collector.world()


def cached_world(n: int, directory: Path, seed: int = 0) -> tuple[Path, BenchWorld]:
    """The world file of n integrations in `directory`, generated unless already there."""
    path = directory / f"world-v{GENERATOR_VERSION}-s{seed}-{n}.json"
    meta_path = path.with_suffix(".meta.json")
    if path.exists() and meta_path.exists():
        return path, BenchWorld.from_json(orjson.loads(meta_path.read_bytes()))
    world = write_world(n, path, seed)
    meta_path.write_bytes(orjson.dumps(world.to_json()))
    return path, world


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.worlds", description="Write a benchmark world file."
    )
    parser.add_argument("--integrations", type=int, required=True, help="number of integrations")
    parser.add_argument("-o", "--output", type=Path, required=True, help="world file to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    world = write_world(args.integrations, args.output, args.seed)
    print(
        f"wrote {args.output}: {world.integrations} integrations, "
        f"{world.partner_organisations} partner organisations, "
        f"admin scope {world.admin_scope}, desk scope {world.desk_scope}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
