"""Group commit: concurrent writes of one kind gathered into one statement and one commit.

A `Gatherer` takes one write at a time (`submit`) and hands `run` a batch of them. It never
waits on a clock: a write that arrives while fewer than `flights` batches are running starts
one at once, alone if it is alone (so an idle process adds no latency); writes that arrive
while `flights` batches run wait for one of them to end, and all that waited then go
together, up to `limit`. So the batch grows with the load and shrinks with it, and the wait to
gather is never longer than one batch's round trip and commit.

Each write is answered with its own result, only once its batch has committed: `run` returns
one result or exception per write, in order. How a write that is refused (or fails) is kept
from failing the others is `run`'s business (`integrations/batching.py`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741 - a write, as the gatherer's user describes it
R = TypeVar("R")


class Gatherer(Generic[I, R]):
    """Writes of one kind, run in batches of up to `limit`, at most `flights` at a time.

    `apart(write)` names what two writes of one batch must not share (the row a PATCH
    changes, an Idempotency-Key): the second waits for the next batch. None: nothing.
    """

    def __init__(
        self,
        run: Callable[[list[I]], Awaitable[Sequence[R | BaseException]]],
        *,
        limit: int = 64,
        flights: int = 2,
        apart: Callable[[I], Hashable | None] | None = None,
    ) -> None:
        self._run = run
        self._limit = limit
        self._flights = flights
        self._apart = apart
        self._waiting: deque[tuple[I, asyncio.Future[R]]] = deque()
        self._flying = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0  # batches run, for tests and metrics
        self.largest = 0

    async def submit(self, write: I) -> R:
        """Run `write` in the next batch; its result once that batch has committed."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((write, future))
        if self._flying < self._flights:
            self._launch()
        return await future

    def _launch(self) -> None:
        batch: list[tuple[I, asyncio.Future[R]]] = []
        held: set[Hashable] = set()
        later: list[tuple[I, asyncio.Future[R]]] = []
        while self._waiting and len(batch) < self._limit:
            write, future = self._waiting.popleft()
            if future.done():  # its request was cancelled before it went: nothing to write
                continue
            mark = None if self._apart is None else self._apart(write)
            if mark is not None:
                if mark in held:
                    later.append((write, future))
                    continue
                held.add(mark)
            batch.append((write, future))
        self._waiting.extendleft(reversed(later))
        if not batch:
            return
        self._flying += 1
        self.batches += 1
        self.largest = max(self.largest, len(batch))
        task = asyncio.get_running_loop().create_task(self._fly(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fly(self, batch: list[tuple[I, asyncio.Future[R]]]) -> None:
        outcomes: Sequence[R | BaseException]
        try:
            outcomes = await self._run([write for write, _ in batch])
            if len(outcomes) != len(batch):
                raise AssertionError(f"{len(outcomes)} outcomes for {len(batch)} writes")
        except BaseException as exc:
            outcomes = [exc] * len(batch)
        finally:
            self._flying -= 1
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, asyncio.CancelledError):
                future.cancel()
            elif isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        while self._waiting and self._flying < self._flights:
            self._launch()
