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
import copy
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741 - a write, as the gatherer's user describes it
R = TypeVar("R")


class Gatherer(Generic[I, R]):
    """Writes of one kind, run in batches of up to `limit`, at most `flights` at a time.

    `apart(write)` names what two writes of one batch must not share (the row a PATCH
    changes, an Idempotency-Key): a write that shares a mark with one already in the batch
    waits for the next.
    """

    def __init__(
        self,
        run: Callable[[list[I]], Awaitable[Sequence[R | BaseException]]],
        *,
        limit: int = 64,
        flights: int = 2,
        apart: Callable[[I], Iterable[Hashable]] | None = None,
    ) -> None:
        self._run = run
        self._limit = limit
        self._flights = flights
        self._apart = apart
        self._waiting: deque[tuple[I, asyncio.Future[R]]] = deque()
        self._flying = 0
        self._tasks: set[asyncio.Task[Sequence[R | BaseException]]] = set()
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
            marks = () if self._apart is None else tuple(self._apart(write))
            if any(mark in held for mark in marks):
                later.append((write, future))
                continue
            held.update(marks)
            batch.append((write, future))
        self._waiting.extendleft(reversed(later))
        if not batch:
            return
        self._flying += 1
        self.batches += 1
        self.largest = max(self.largest, len(batch))
        task = asyncio.get_running_loop().create_task(self._fly([write for write, _ in batch]))
        self._tasks.add(task)
        # The outcome is handed out by a callback, not by the task itself: a task cancelled
        # before its first step (the loop shutting down) runs no code of its own.
        task.add_done_callback(lambda done: self._landed(batch, done))
        for _, future in batch:
            future.add_done_callback(lambda _: self._abandoned(batch, task))

    def _abandoned(
        self,
        batch: list[tuple[I, asyncio.Future[R]]],
        task: asyncio.Task[Sequence[R | BaseException]],
    ) -> None:
        """Once every write of a running batch has been cancelled (the drain timeout cut
        their requests short), nobody needs it: cancel it, so its statement is cancelled and
        rolled back as a lone write's would be, instead of committing after its requests
        were answered 503. A batch that still serves one write goes on."""
        if not task.done() and all(future.cancelled() for _, future in batch):
            task.cancel()

    async def _fly(self, writes: list[I]) -> Sequence[R | BaseException]:
        return await self._run(writes)

    def _landed(
        self,
        batch: list[tuple[I, asyncio.Future[R]]],
        task: asyncio.Task[Sequence[R | BaseException]],
    ) -> None:
        self._tasks.discard(task)
        self._flying -= 1
        if task.cancelled():
            for _, future in batch:
                future.cancel()
            return  # the loop is going away: launch nothing more
        outcomes: Sequence[R | BaseException]
        failure = task.exception()
        if failure is None:
            outcomes = task.result()
            if len(outcomes) != len(batch):
                failure = AssertionError(f"{len(outcomes)} outcomes for {len(batch)} writes")
        if failure is not None:
            outcomes = [each(failure) for _ in batch]
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


def each(exc: BaseException) -> BaseException:
    """A copy of `exc` (same class, arguments and cause) for one of several writes it failed:
    one exception object raised in many requests would gather all their tracebacks."""
    try:
        copied = copy.copy(exc)
    except Exception:
        return exc
    copied.__cause__ = exc.__cause__
    copied.__traceback__ = None
    return copied
