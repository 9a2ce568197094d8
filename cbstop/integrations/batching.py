"""Group commit on PostgreSQL: the creates, and the PATCHes, a process makes at once go
together, one statement and one commit for each batch.

Each write alone costs PostgreSQL a statement, a commit (a WAL flush) and, for a create, the
counter shards' row locks held until that commit; a batch pays each once for all its writes
(docs/performance.md). The writes of one operation and scope kind share a statement
(`sql_postgres.CREATE`, `sql_postgres.UPDATE`), gathered by `cbstop.db.batch.Gatherer`.
PATCHes with an Idempotency-Key store their answers in the same transaction, one more
statement for the batch (a PATCH's answer is known only once its row is updated).

A write that is refused (its organisation or integration out of scope, a merchant not its
own, another type, an If-Match that does not match, its key holding another request's
answer) is refused inside the statement, row by row, and the others go on. What can fail the
statement as a whole is mostly a conflict with another process's writes: a key that another
process's uncommitted write holds (a unique violation once it commits, or the lock wait
running out), a deadlock; or the statement's time running out. Whatever the database
refused, it rolled back whole, so each of its writes runs again alone (a few at a time) and
meets its own fate. A failure after which the outcome is unknown (the connection lost) is
never run again: each write of the batch gets the 503, as a lone write would.

SQLite needs none of this: its writes are gathered into shared commits by the database
layer (`cbstop/db/sqlite.py`).
"""

from __future__ import annotations

import asyncio
import random
import weakref
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from cbstop.db.batch import Gatherer, each
from cbstop.db.database import Database, rolled_back
from cbstop.db.scope import ScopeKind
from cbstop.db.tables import COUNT_SHARDS
from cbstop.idempotency import store
from cbstop.idempotency.keys import Answer, Keyed
from cbstop.integrations import repository
from cbstop.integrations.repository import (
    CreateRequest,
    CreateResult,
    UpdateOutcome,
    UpdateRequest,
)
from cbstop.integrations.schemas import CUSTOM_ORDERS, written

W = TypeVar("W")
R = TypeVar("R")

BATCH_LIMIT = 64  # writes in one statement at most
FLIGHTS = 2  # statements of one operation and scope kind a process runs at once
ALONE_AT_ONCE = 4  # writes of a refused batch run again at once, each alone

# PATCH: its outcome and the answer stored under its key (None: no key, or refused); or, for
# a key that already held this request's answer, (None, that answer).
PatchResult = tuple[UpdateOutcome | None, Answer | None]

_gatherers: WeakKeyDictionary[Database, dict[tuple[str, ScopeKind], Gatherer[Any, Any]]]
_gatherers = WeakKeyDictionary()


def _gatherer(
    db: Database,
    operation: str,
    kind: ScopeKind,
    run: Callable[[Database, list[W]], Awaitable[Sequence[R | BaseException]]],
    apart: Callable[[W], Iterable[Hashable]],
) -> Gatherer[W, R]:
    """The process's gatherer of `operation`s in `kind` scopes on `db`, made on first use."""
    mine = _gatherers.get(db)
    if mine is None:
        mine = _gatherers[db] = {}
    gatherer: Gatherer[W, R] | None = mine.get((operation, kind))
    if gatherer is None:
        # The gatherer holds the database weakly: the map's value must not keep its key alive.
        holder = weakref.ref(db)

        async def on(writes: list[W]) -> Sequence[R | BaseException]:
            held = holder()
            if held is None:
                raise RuntimeError("the database was closed with writes in flight")
            return await run(held, writes)

        gatherer = mine[(operation, kind)] = Gatherer(
            on, limit=BATCH_LIMIT, flights=FLIGHTS, apart=apart
        )
    return gatherer


async def create(db: Database, request: CreateRequest) -> CreateResult:
    """Write one create in the next batch of its scope kind; its result once committed."""
    gatherer = _gatherer(db, "create", request.scope.kind, _creates, _create_marks)
    return await gatherer.submit(request)


async def update(db: Database, request: UpdateRequest) -> PatchResult:
    """Write one PATCH in the next batch of its scope kind; its result once committed."""
    gatherer = _gatherer(db, "update", request.scope.kind, _updates, _update_marks)
    return await gatherer.submit(request)


def _create_marks(request: CreateRequest) -> list[Hashable]:
    """Two creates under one Idempotency-Key go in different statements: in one, the second's
    answer would fail the whole statement on the primary key."""
    keyed = request.keyed
    return [] if keyed is None else [("key", keyed.owner, keyed.key)]


def _update_marks(request: UpdateRequest) -> list[Hashable]:
    """Two PATCHes of one integration go in different statements (a row is updated once per
    statement: the second would change nothing), and so do two under one key."""
    keyed = request.keyed
    marks: list[Hashable] = [("row", request.integration_id)]
    if keyed is not None:
        marks.append(("key", keyed.owner, keyed.key))
    return marks


async def _creates(
    db: Database, requests: list[CreateRequest]
) -> list[CreateResult | BaseException]:
    """The batch's statement; if the database refused it (and so rolled it back), each of
    its creates alone."""
    try:
        async with db.single_statement_write() as conn:
            results = await repository.create_many(
                conn, requests, shard=random.randrange(COUNT_SHARDS)
            )
        return list(results)
    except Exception as exc:
        if len(requests) == 1 or not rolled_back(exc):
            return [each(exc) for _ in requests]
    return await _alone(db, requests, _creates)


async def _updates(
    db: Database, requests: list[UpdateRequest]
) -> list[PatchResult | BaseException]:
    """The batch's statement, and with it, for the PATCHes with a key, their answers in the
    same transaction; if the database refused it, each of its PATCHes alone. A PATCH whose
    row changed between the statement's read and its lock changed nothing: once the batch
    has committed, it runs again on the row as it is now."""
    try:
        if all(request.keyed is None for request in requests):
            async with db.single_statement_write() as conn:
                results = await repository.update_many(conn, requests, updatable_type=CUSTOM_ORDERS)
            answers: list[Answer | None] = [None] * len(requests)
        else:
            async with db.transaction(write=True) as conn:
                results = await repository.update_many(conn, requests, updatable_type=CUSTOM_ORDERS)
                answers = [
                    stored_answer(r.keyed, result)
                    for r, result in zip(requests, results, strict=True)
                ]
                await store.remember_many(
                    conn,
                    [
                        (r.keyed, a)
                        for r, a in zip(requests, answers, strict=True)
                        if r.keyed is not None and a is not None
                    ],
                )
    except Exception as exc:
        if len(requests) == 1 or not rolled_back(exc):
            return [each(exc) for _ in requests]
        return await _alone(db, requests, _updates)
    done: list[PatchResult | BaseException | None] = [
        None if result is None else _patched(result, answer)
        for result, answer in zip(results, answers, strict=True)
    ]
    again = [i for i, result in enumerate(done) if result is None]
    if again:
        rerun = await _updates(db, [requests[i] for i in again])
        for i, result in zip(again, rerun, strict=True):
            done[i] = result
    return [result for result in done if result is not None]


async def _alone(
    db: Database,
    requests: list[W],
    run: Callable[[Database, list[W]], Awaitable[list[R | BaseException]]],
) -> list[R | BaseException]:
    """Each write of a refused batch in a statement of its own, a few at a time (the pool is
    shared with every other request of the process)."""
    results: list[R | BaseException] = []
    for start in range(0, len(requests), ALONE_AT_ONCE):
        some = requests[start : start + ALONE_AT_ONCE]
        for (result,) in await asyncio.gather(*(run(db, [request]) for request in some)):
            results.append(result)
    return results


def stored_answer(keyed: Keyed | None, result: object) -> Answer | None:
    """The answer a PATCH with a key stores: its 200, if it found its integration and
    If-Match allowed it (a refused PATCH stores nothing)."""
    if keyed is None or not isinstance(result, UpdateOutcome) or result.updated is None:
        return None
    return written(200, result.updated, stored_at=keyed.now)


def _patched(
    result: UpdateOutcome | Answer | Exception, answer: Answer | None
) -> PatchResult | Exception:
    if isinstance(result, Exception):
        return result
    if isinstance(result, Answer):
        return None, result
    return result, answer
