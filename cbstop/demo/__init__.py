"""The demo: a throwaway SQLite database loaded with a world that mirrors the spec's examples.

The specification's Example 1 (a partner key) lists `int_abc123` and `int_def789`, both of
`org_xyz456`, while Example 2 (an organisation key) shows only `int_abc123`. Both cannot hold
for one organisation; the scope rules say an organisation key sees every integration of its
organisation, so here the organisation key sees both (`count: 2`), as the EU desk key does
(docs/decisions.md). The admin key also sees `org_uvw789`, which the EU desk is not assigned.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cbstop.db.migrate import migrate
from cbstop.world.loader import load_world_file

WORLD = Path(__file__).with_name("world.json")

# What each demo key can see, by key id, for the banner `cbstop serve --demo` prints.
SEES = {
    "key_demo_org": "organisation key of org_xyz456: int_abc123 and int_def789",
    "key_demo_admin": (
        "admin partner-group key of ptr_acme: every organisation of the partner "
        "(int_abc123, int_def789 and org_uvw789's int_ghi345)"
    ),
    "key_demo_eu_desk": (
        "non-admin partner-group key, assigned org_xyz456 only: int_abc123 and int_def789, "
        "not int_ghi345"
    ),
}


@dataclass(frozen=True, slots=True)
class DemoKey:
    """A demo key, its plaintext and what it can see."""

    id: str
    secret: str
    sees: str


@dataclass(frozen=True, slots=True)
class Demo:
    """A prepared demo database."""

    database_url: str
    directory: Path
    keys: tuple[DemoKey, ...]


def demo_keys() -> tuple[DemoKey, ...]:
    """The demo world's keys, in the order the world declares them."""
    world = json.loads(WORLD.read_text(encoding="utf-8"))
    return tuple(DemoKey(k["id"], k["secret"], SEES[k["id"]]) for k in world["api_keys"])


def prepare_demo(key_secret: str | Sequence[str], directory: Path | None = None) -> Demo:
    """A fresh SQLite database in a new temporary directory, migrated and loaded; its keys are
    hashed with the newest of the key secrets and stored with its fingerprint."""
    where = directory or Path(tempfile.mkdtemp(prefix="cbstop-demo-"))
    url = f"sqlite:///{where / 'demo.db'}"
    migrate(url)
    load_world_file(url, WORLD, key_secret=key_secret)
    return Demo(url, where, demo_keys())
