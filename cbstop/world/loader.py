"""Load a world file in one transaction: all of it, or nothing and an error naming the entry.

Checks run in bulk in Python against what the file declares and what the database already
holds (fetched with one query per table), so a million integrations cost a few seconds of
checking; rows then go in with COPY on PostgreSQL and one `executemany` per table on SQLite.
An entry whose id already exists with the same content is skipped, so loading a file twice
changes nothing.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from cbstop.auth.keys import encode_abilities, hash_key
from cbstop.db.database import Connection, sqlite_path
from cbstop.world.schema import (
    ApiKey,
    Integration,
    Merchant,
    Organisation,
    Partner,
    PartnerGroup,
    World,
    describe_validation_error,
    entry_label,
)

# Past this many rows a load shows a progress bar and refreshes the planner's statistics.
LARGE = 50_000
COPY_CHUNK = 100_000
ANALYSED = ("organisations", "merchants", "integrations", "integration_merchants")


class WorldError(Exception):
    """A world file that cannot be loaded; the message names the offending entry."""


@dataclass
class LoadSummary:
    """What a load did: rows added and entries already present, per section."""

    added: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def describe(self) -> str:
        """One line for the command line."""
        added = ", ".join(f"{section} {n}" for section, n in self.added.items() if n)
        same = sum(self.unchanged.values())
        text = f"added {added}" if added else "nothing new"
        if same:
            text += f"; {same} entries already present"
        return f"{text} ({self.seconds:.1f}s)"


def load_world_file(
    database_url: str, path: Path, *, key_secret: str, progress: bool = False
) -> LoadSummary:
    """Load the world file at `path` into the database."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise WorldError(f"cannot read world file {path}: {exc.strerror or exc}") from exc
    with _gc_paused():
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise WorldError(f"{path} is not valid JSON: {exc}") from exc
        del data
        return load_world(database_url, raw, key_secret=key_secret, progress=progress)


def load_world(
    database_url: str, world: Mapping[str, Any], *, key_secret: str, progress: bool = False
) -> LoadSummary:
    """Load a parsed world file into the database, in one transaction."""
    started = time.perf_counter()
    with _gc_paused(), _Reporter(progress and _size(world) >= LARGE) as reporter:
        reporter.step("Validating", 1)
        try:
            parsed = World.model_validate(world)
        except ValidationError as exc:
            raise WorldError(describe_validation_error(exc, world)) from exc
        summary = asyncio.run(_load(database_url, parsed, world, key_secret, reporter))
    summary.seconds = time.perf_counter() - started
    return summary


def _size(world: Mapping[str, Any]) -> int:
    """How many entries a (not yet validated) world declares."""
    if not isinstance(world, Mapping):
        return 0
    return sum(len(v) for v in world.values() if isinstance(v, list))


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Millions of small objects and no cycles: the collector would only burn time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Reporter:
    """A Rich progress bar on stderr for large loads; silent otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _Reporter:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description:<28}"),
                BarColumn(),
                TextColumn("{task.completed:>10,}/{task.total:,}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._finish()
            self._progress.stop()

    def _finish(self) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=self._progress.tasks[-1].total)

    def step(self, description: str, total: int) -> None:
        if self._progress is not None:
            self._finish()
            self._task = self._progress.add_task(description, total=max(total, 1))

    def advance(self, n: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, n)


async def _load(
    url: str, world: World, raw: Mapping[str, Any], key_secret: str, reporter: _Reporter
) -> LoadSummary:
    if url.startswith(("postgresql://", "postgres://")):
        import asyncpg

        from cbstop.db.postgres import PostgresConnection

        # A connection of its own: the service pool's statement timeout is for requests.
        pg = await asyncpg.connect(url, server_settings={"application_name": "cbstop-load"})
        try:
            async with pg.transaction():
                conn = PostgresConnection(pg)
                try:
                    return await _Plan(conn, world, raw, key_secret, reporter).run()
                except asyncpg.IntegrityConstraintViolationError as exc:
                    raise WorldError(f"the database refused the world: {exc}") from exc
        finally:
            await pg.close()
    import sqlite3

    from cbstop.db.sqlite import SqliteDatabase

    db = SqliteDatabase.open(sqlite_path(url))
    try:
        async with db.transaction(write=True) as lite:
            try:
                return await _Plan(lite, world, raw, key_secret, reporter).run()
            except sqlite3.IntegrityError as exc:
                raise WorldError(f"the database refused the world: {exc}") from exc
    finally:
        await db.close()


class _Plan:
    """One load: checks every entry, then writes the new ones."""

    def __init__(
        self,
        conn: Connection,
        world: World,
        raw: Mapping[str, Any],
        key_secret: str,
        reporter: _Reporter,
    ) -> None:
        self.conn = conn
        self.world = world
        self.raw = raw
        self.key_secret = key_secret
        self.reporter = reporter
        self.now = time.time_ns() // 1000
        self.summary = LoadSummary()

    def fail(self, section: str, index: int, message: str) -> WorldError:
        return WorldError(f"{entry_label(self.raw, section, index)}: {message}")

    async def run(self) -> LoadSummary:
        w = self.world
        self.reporter.step("Checking", 1)
        # Each check sees every entry of the file, so references may point forwards.
        partners = await self._partners(w.partners)
        orgs = await self._organisations(w.organisations)
        groups = await self._partner_groups(w.partner_groups)
        merchants = await self._merchants(w.merchants)
        integrations = await self._integrations(w.integrations)
        keys = await self._api_keys(w.api_keys)

        await self._write("partners", ["id", "name"], [(p.id, p.name) for p in partners])
        await self._write(
            "organisations",
            ["id", "name", "partner_id"],
            [(o.id, o.name, o.partner_id) for o in orgs],
        )
        await self._write(
            "partner_groups",
            ["id", "partner_id", "name", "is_admin"],
            [(g.id, g.partner_id, g.name, g.is_admin) for g in groups],
        )
        await self._write(
            "partner_group_organisations",
            ["partner_group_id", "organisation_id", "partner_id"],
            [(g.id, o, g.partner_id) for g in groups for o in g.organisation_ids],
        )
        await self._write(
            "merchants",
            ["id", "organisation_id", "name"],
            [(m.id, m.organisation_id, m.name) for m in merchants],
        )
        await self._write_integrations(integrations)
        await self._write(
            "api_keys",
            [
                "id",
                "key_hash",
                "organisation_id",
                "partner_group_id",
                "abilities",
                "revoked",
                "revoked_at",
                "created_at",
            ],
            keys,
        )
        if sum(self.summary.added.values()) >= LARGE:
            self.reporter.step("Refreshing statistics", 1)
            for table in ANALYSED:
                await self.conn.execute(f"ANALYZE {table}")
        self.reporter.step("Committing", 1)
        return self.summary

    # --- reading what the database already holds --------------------------------------------

    async def _fetch_in(self, sql: str, ids: Sequence[str]) -> Sequence[Any]:
        """Run `sql`, whose `{ids}` stands for "is one of these ids" ($1), over `ids`."""
        if not ids:
            return []
        if self.conn.dialect == "postgresql":
            return await self.conn.fetch(sql.format(ids="= ANY($1::text[])"), list(ids))
        return await self.conn.fetch(
            sql.format(ids="IN (SELECT value FROM json_each($1))"), json.dumps(list(ids))
        )

    def _unique(self, section: str, entries: Sequence[Any]) -> None:
        seen: dict[str, int] = {}
        for index, entry in enumerate(entries):
            first = seen.setdefault(entry.id, index)
            if first != index:
                where = entry_label(self.raw, section, first)
                raise self.fail(section, index, f"duplicate id, already declared at {where}")

    def _new_entries(
        self,
        section: str,
        entries: Sequence[Any],
        existing: Mapping[str, Any],
        content: Any,
    ) -> list[Any]:
        """The entries not yet in the database; an id there with other content is an error."""
        new = []
        for index, entry in enumerate(entries):
            have = existing.get(entry.id)
            if have is None:
                new.append(entry)
                continue
            want = content(entry)
            if have != want:
                fields = [k for k in want if want[k] != have.get(k)]
                raise self.fail(
                    section,
                    index,
                    "id already exists in the database with a different "
                    + ", ".join(fields or ["content"]),
                )
        self.summary.unchanged[section] = len(entries) - len(new)
        return new

    # --- one method per section: check, and return what is new ------------------------------

    async def _partners(self, entries: list[Partner]) -> list[Partner]:
        self._unique("partners", entries)
        rows = await self._fetch_in(
            "SELECT id, name FROM partners WHERE id {ids}", [p.id for p in entries]
        )
        existing = {r["id"]: {"name": r["name"]} for r in rows}
        return self._new_entries("partners", entries, existing, lambda p: {"name": p.name})

    async def _partner_exists(self, ids: set[str]) -> set[str]:
        declared = {p.id for p in self.world.partners}
        missing = sorted(ids - declared)
        rows = await self._fetch_in("SELECT id FROM partners WHERE id {ids}", missing)
        return declared | {r["id"] for r in rows}

    async def _organisations(self, entries: list[Organisation]) -> list[Organisation]:
        self._unique("organisations", entries)
        known = await self._partner_exists({o.partner_id for o in entries if o.partner_id})
        for index, org in enumerate(entries):
            if org.partner_id is not None and org.partner_id not in known:
                raise self.fail("organisations", index, f"partner {org.partner_id} does not exist")
        rows = await self._fetch_in(
            "SELECT id, name, partner_id FROM organisations WHERE id {ids}",
            [o.id for o in entries],
        )
        existing = {r["id"]: {"name": r["name"], "partner_id": r["partner_id"]} for r in rows}
        return self._new_entries(
            "organisations",
            entries,
            existing,
            lambda o: {"name": o.name, "partner_id": o.partner_id},
        )

    async def _organisation_partners(self, ids: set[str]) -> dict[str, str | None]:
        """Organisation id -> its partner, for every id that exists in the file or database."""
        declared = {o.id: o.partner_id for o in self.world.organisations}
        missing = sorted(ids - declared.keys())
        rows = await self._fetch_in(
            "SELECT id, partner_id FROM organisations WHERE id {ids}", missing
        )
        declared.update({r["id"]: r["partner_id"] for r in rows})
        return declared

    async def _partner_groups(self, entries: list[PartnerGroup]) -> list[PartnerGroup]:
        self._unique("partner_groups", entries)
        partners = await self._partner_exists({g.partner_id for g in entries})
        orgs = await self._organisation_partners({o for g in entries for o in g.organisation_ids})
        for index, group in enumerate(entries):
            if group.partner_id not in partners:
                raise self.fail(
                    "partner_groups", index, f"partner {group.partner_id} does not exist"
                )
            seen: set[str] = set()
            for org_id in group.organisation_ids:
                if org_id in seen:
                    raise self.fail(
                        "partner_groups", index, f"organisation_ids contains {org_id} twice"
                    )
                seen.add(org_id)
                if org_id not in orgs:
                    raise self.fail(
                        "partner_groups", index, f"organisation {org_id} does not exist"
                    )
                if orgs[org_id] != group.partner_id:
                    owner = orgs[org_id] or "no partner"
                    raise self.fail(
                        "partner_groups",
                        index,
                        f"organisation {org_id} belongs to {owner}, "
                        f"not to the group's partner {group.partner_id}",
                    )
        ids = [g.id for g in entries]
        rows = await self._fetch_in(
            "SELECT id, partner_id, name, is_admin FROM partner_groups WHERE id {ids}", ids
        )
        assigned = await self._fetch_in(
            "SELECT partner_group_id, organisation_id FROM partner_group_organisations "
            "WHERE partner_group_id {ids}",
            [r["id"] for r in rows],
        )
        members: dict[str, set[str]] = {}
        for a in assigned:
            members.setdefault(a["partner_group_id"], set()).add(a["organisation_id"])
        existing = {
            r["id"]: {
                "partner_id": r["partner_id"],
                "name": r["name"],
                "is_admin": bool(r["is_admin"]),
                "organisation_ids": members.get(r["id"], set()),
            }
            for r in rows
        }
        return self._new_entries(
            "partner_groups",
            entries,
            existing,
            lambda g: {
                "partner_id": g.partner_id,
                "name": g.name,
                "is_admin": g.is_admin,
                "organisation_ids": set(g.organisation_ids),
            },
        )

    async def _merchants(self, entries: list[Merchant]) -> list[Merchant]:
        self._unique("merchants", entries)
        orgs = await self._organisation_partners({m.organisation_id for m in entries})
        for index, merchant in enumerate(entries):
            if merchant.organisation_id not in orgs:
                raise self.fail(
                    "merchants", index, f"organisation {merchant.organisation_id} does not exist"
                )
        rows = await self._fetch_in(
            "SELECT id, organisation_id, name FROM merchants WHERE id {ids}",
            [m.id for m in entries],
        )
        existing = {
            r["id"]: {"organisation_id": r["organisation_id"], "name": r["name"]} for r in rows
        }
        return self._new_entries(
            "merchants",
            entries,
            existing,
            lambda m: {"organisation_id": m.organisation_id, "name": m.name},
        )

    async def _integrations(
        self, entries: list[Integration]
    ) -> list[tuple[Integration, str | None]]:
        """New integrations, each with its organisation's partner."""
        if len(entries) >= LARGE:
            self.reporter.step("Checking integrations", len(entries))
        self._unique("integrations", entries)
        orgs = await self._organisation_partners({i.organisation_id for i in entries})
        merchant_org = {m.id: m.organisation_id for m in self.world.merchants}
        wanted = {mid for i in entries for mid in i.merchant_ids} - merchant_org.keys()
        rows = await self._fetch_in(
            "SELECT id, organisation_id FROM merchants WHERE id {ids}", sorted(wanted)
        )
        merchant_org.update({r["id"]: r["organisation_id"] for r in rows})
        for index, integration in enumerate(entries):
            org_id = integration.organisation_id
            if org_id not in orgs:
                raise self.fail("integrations", index, f"organisation {org_id} does not exist")
            mids = integration.merchant_ids
            if len(set(mids)) != len(mids):
                twice = next(m for m in mids if mids.count(m) > 1)
                raise self.fail("integrations", index, f"merchant_ids contains {twice} twice")
            for mid in mids:
                owner = merchant_org.get(mid)
                if owner != org_id:
                    problem = "does not exist" if owner is None else "does not belong to"
                    raise self.fail(
                        "integrations",
                        index,
                        f"merchant {mid} {problem}"
                        + (f" organisation {org_id}" if owner is not None else ""),
                    )
        ids = [i.id for i in entries]
        rows = await self._fetch_in(
            "SELECT id, organisation_id, name, type, status FROM integrations WHERE id {ids}", ids
        )
        existing: dict[str, dict[str, Any]] = {
            r["id"]: {
                "organisation_id": r["organisation_id"],
                "name": r["name"],
                "type": r["type"],
                "status": r["status"],
                "merchant_ids": [],
            }
            for r in rows
        }
        links = await self._fetch_in(
            "SELECT integration_id, merchant_id FROM integration_merchants "
            "WHERE integration_id {ids} ORDER BY integration_id, position",
            list(existing),
        )
        for link in links:
            existing[link["integration_id"]]["merchant_ids"].append(link["merchant_id"])
        new = self._new_entries(
            "integrations",
            entries,
            existing,
            lambda i: {
                "organisation_id": i.organisation_id,
                "name": i.name,
                "type": i.type,
                "status": i.status,
                "merchant_ids": list(i.merchant_ids),
            },
        )
        self.reporter.advance(len(entries))
        return [(i, orgs[i.organisation_id]) for i in new]

    async def _api_keys(self, entries: list[ApiKey]) -> list[tuple[Any, ...]]:
        """Rows of the new keys, secrets already hashed."""
        self._unique("api_keys", entries)
        orgs = await self._organisation_partners(
            {k.organisation_id for k in entries if k.organisation_id is not None}
        )
        declared_groups = {g.id for g in self.world.partner_groups}
        wanted = sorted(
            {k.partner_group_id for k in entries if k.partner_group_id} - declared_groups
        )
        rows = await self._fetch_in("SELECT id FROM partner_groups WHERE id {ids}", wanted)
        groups = declared_groups | {r["id"] for r in rows}
        hashes: dict[str, int] = {}
        content: dict[str, dict[str, Any]] = {}
        for index, key in enumerate(entries):
            if (key.organisation_id is None) == (key.partner_group_id is None):
                raise self.fail(
                    "api_keys", index, "give exactly one of organisation_id and partner_group_id"
                )
            if key.organisation_id is not None and key.organisation_id not in orgs:
                raise self.fail(
                    "api_keys", index, f"organisation {key.organisation_id} does not exist"
                )
            if key.partner_group_id is not None and key.partner_group_id not in groups:
                raise self.fail(
                    "api_keys", index, f"partner group {key.partner_group_id} does not exist"
                )
            key_hash = hash_key(self.key_secret, key.secret)
            first = hashes.setdefault(key_hash, index)
            if first != index:
                where = entry_label(self.raw, "api_keys", first)
                raise self.fail("api_keys", index, f"secret is already used by {where}")
            content[key.id] = {
                "key_hash": key_hash,
                "organisation_id": key.organisation_id,
                "partner_group_id": key.partner_group_id,
                "abilities": encode_abilities(set(key.abilities)),
                "revoked": key.revoked,
            }
        rows = await self._fetch_in(
            "SELECT id, key_hash, organisation_id, partner_group_id, abilities, revoked "
            "FROM api_keys WHERE id {ids}",
            [k.id for k in entries],
        )
        existing = {
            r["id"]: {
                "key_hash": r["key_hash"],
                "organisation_id": r["organisation_id"],
                "partner_group_id": r["partner_group_id"],
                "abilities": r["abilities"],
                "revoked": bool(r["revoked"]),
            }
            for r in rows
        }
        new = self._new_entries("api_keys", entries, existing, lambda k: content[k.id])
        taken = await self._fetch_in(
            "SELECT id, key_hash FROM api_keys WHERE key_hash {ids}",
            [content[k.id]["key_hash"] for k in new],
        )
        if taken:
            owner = {r["key_hash"]: r["id"] for r in taken}
            for index, key in enumerate(entries):
                other = owner.get(content[key.id]["key_hash"])
                if other is not None and other != key.id:
                    raise self.fail("api_keys", index, f"secret is already used by key {other}")
        out = []
        for key in new:
            c = content[key.id]
            revoked_at = self.now if key.revoked else None
            out.append(
                (
                    key.id,
                    c["key_hash"],
                    c["organisation_id"],
                    c["partner_group_id"],
                    c["abilities"],
                    key.revoked,
                    revoked_at,
                    self.now,
                )
            )
        return out

    # --- writing ---------------------------------------------------------------------------

    async def _write(
        self, table: str, columns: list[str], rows: Sequence[tuple[Any, ...]] | list[Any]
    ) -> None:
        self.summary.added[table] = len(rows)
        if not rows:
            return
        large = len(rows) >= LARGE
        if large:
            self.reporter.step(f"Writing {table}", len(rows))
        conn = self.conn
        async with self._checks_deferred(table, large):
            for start in range(0, len(rows), COPY_CHUNK):
                chunk = rows[start : start + COPY_CHUNK]
                await conn.bulk_insert(table, columns, chunk)
                if large:
                    self.reporter.advance(len(chunk))

    @asynccontextmanager
    async def _checks_deferred(self, table: str, large: bool) -> AsyncIterator[None]:
        """For a large COPY on PostgreSQL, check foreign keys once afterwards, not per row.

        The foreign keys are dropped and added back (one join each instead of a lookup per
        row), and an empty table's plain indexes are built after the rows are in. It all
        happens inside the load's transaction, so other sessions never see the table without
        them (they wait for the load instead), and a failure restores everything.
        """
        if not large or self.conn.dialect != "postgresql":
            yield
            return
        conn = self.conn
        await conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
        foreign_keys = await conn.fetch(
            "SELECT conname, pg_get_constraintdef(oid) AS definition FROM pg_constraint "
            "WHERE conrelid = $1::regclass AND contype = 'f' ORDER BY conname",
            table,
        )
        indexes: Sequence[Any] = []
        if not await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
            indexes = await conn.fetch(
                "SELECT indexname, indexdef FROM pg_indexes "
                "WHERE schemaname = current_schema() AND tablename = $1 AND indexname NOT IN "
                "(SELECT conname FROM pg_constraint WHERE conrelid = $1::regclass) "
                "ORDER BY indexname",
                table,
            )
        for fk in foreign_keys:
            await conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {_quote(fk['conname'])}")
        for index in indexes:
            await conn.execute(f"DROP INDEX {_quote(index['indexname'])}")
        yield
        self.reporter.step(f"Indexing {table}", 1)
        for index in indexes:
            await conn.execute(index["indexdef"])
        for fk in foreign_keys:
            await conn.execute(
                f"ALTER TABLE {table} ADD CONSTRAINT {_quote(fk['conname'])} {fk['definition']}"
            )

    async def _write_integrations(self, new: list[tuple[Integration, str | None]]) -> None:
        await self._write(
            "integrations",
            ["id", "organisation_id", "partner_id", "name", "type", "status", "created_at"],
            [
                (i.id, i.organisation_id, partner, i.name, i.type, i.status, self.now)
                for i, partner in new
            ],
        )
        await self._write(
            "integration_merchants",
            ["integration_id", "position", "merchant_id", "organisation_id"],
            [
                (i.id, position, mid, i.organisation_id)
                for i, _ in new
                for position, mid in enumerate(i.merchant_ids)
            ],
        )
        per_org: dict[str, int] = {}
        per_partner: dict[str, int] = {}
        for i, partner in new:
            per_org[i.organisation_id] = per_org.get(i.organisation_id, 0) + 1
            if partner is not None:
                per_partner[partner] = per_partner.get(partner, 0) + 1
        # Shard 0 takes the load's increments; the API spreads its own over the shards.
        for table, column, counts in (
            ("organisation_integration_counts", "organisation_id", per_org),
            ("partner_integration_counts", "partner_id", per_partner),
        ):
            if counts:
                await self.conn.executemany(
                    f"INSERT INTO {table} ({column}, shard, n) VALUES ($1, 0, $2) "
                    f"ON CONFLICT ({column}, shard) DO UPDATE SET n = {table}.n + excluded.n",
                    list(counts.items()),
                )


def _quote(name: str) -> str:
    """A catalog name as a PostgreSQL identifier."""
    return '"' + name.replace('"', '""') + '"'
