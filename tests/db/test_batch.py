"""The gatherer of group commit (cbstop/db/batch.py): alone when idle, together under load."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Sequence

import pytest

from cbstop.db.batch import Gatherer


class Recorder:
    """A `run` that records each batch and answers each write with its double, holding each
    batch until `release` is set (so writes pile up behind it)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def run(self, writes: list[int]) -> Sequence[int | BaseException]:
        self.batches.append(list(writes))
        await self.release.wait()
        return [ValueError(w) if w < 0 else w * 2 for w in writes]


def test_a_write_alone_goes_at_once_alone() -> None:
    async def main() -> None:
        recorder = Recorder()
        gatherer: Gatherer[int, int] = Gatherer(recorder.run, flights=2)
        assert await gatherer.submit(1) == 2
        assert await gatherer.submit(2) == 4
        assert recorder.batches == [[1], [2]]

    asyncio.run(main())


def test_writes_that_arrive_while_the_flights_run_go_together_up_to_the_limit() -> None:
    async def main() -> None:
        recorder = Recorder()
        recorder.release.clear()
        gatherer: Gatherer[int, int] = Gatherer(recorder.run, flights=1, limit=4)
        tasks = [asyncio.create_task(gatherer.submit(w)) for w in range(1, 8)]
        await asyncio.sleep(0.01)
        assert recorder.batches == [[1]]  # the rest wait for the one flight
        recorder.release.set()
        assert await asyncio.gather(*tasks) == [w * 2 for w in range(1, 8)]
        assert recorder.batches == [[1], [2, 3, 4, 5], [6, 7]]
        assert (gatherer.batches, gatherer.largest) == (3, 4)

    asyncio.run(main())


def test_each_write_gets_its_own_outcome() -> None:
    async def main() -> None:
        recorder = Recorder()
        recorder.release.clear()
        gatherer: Gatherer[int, int] = Gatherer(recorder.run, flights=1)
        first = asyncio.create_task(gatherer.submit(1))
        await asyncio.sleep(0)
        rest = [asyncio.create_task(gatherer.submit(w)) for w in (2, -3, 4)]
        await asyncio.sleep(0)
        recorder.release.set()
        assert await first == 2
        results = await asyncio.gather(*rest, return_exceptions=True)
        assert results[0] == 4 and results[2] == 8
        assert isinstance(results[1], ValueError) and results[1].args == (-3,)
        assert recorder.batches == [[1], [2, -3, 4]]

    asyncio.run(main())


def test_a_failed_run_fails_every_write_of_its_batch_and_no_other() -> None:
    async def main() -> None:
        calls: list[list[int]] = []

        async def run(writes: list[int]) -> Sequence[int | BaseException]:
            calls.append(writes)
            if 13 in writes:
                raise RuntimeError("the statement failed")
            return writes

        gatherer: Gatherer[int, int] = Gatherer(run, flights=1)
        with pytest.raises(RuntimeError):
            await gatherer.submit(13)
        assert await gatherer.submit(1) == 1

    asyncio.run(main())


def test_writes_kept_apart_go_in_different_batches_in_order() -> None:
    async def main() -> None:
        recorder = Recorder()
        recorder.release.clear()

        def apart(write: int) -> list[Hashable]:
            return [write % 10]  # 3 and 13 change "the same row"

        gatherer: Gatherer[int, int] = Gatherer(recorder.run, flights=1, apart=apart)
        tasks = [asyncio.create_task(gatherer.submit(w)) for w in (1, 3, 13, 4, 23)]
        await asyncio.sleep(0)
        recorder.release.set()
        await asyncio.gather(*tasks)
        assert recorder.batches == [[1], [3, 4], [13], [23]]


def test_a_write_with_several_marks_waits_if_any_is_taken() -> None:
    async def main() -> None:
        recorder = Recorder()
        recorder.release.clear()

        def apart(write: int) -> list[Hashable]:
            return [f"row{write % 10}", f"key{write // 10}"]  # 12 shares 11's key, not its row

        gatherer: Gatherer[int, int] = Gatherer(recorder.run, flights=1, apart=apart)
        tasks = [asyncio.create_task(gatherer.submit(w)) for w in (1, 11, 12, 23)]
        await asyncio.sleep(0)
        recorder.release.set()
        await asyncio.gather(*tasks)
        assert recorder.batches == [[1], [11, 23], [12]]

    asyncio.run(main())


def test_a_batch_cancelled_before_it_ran_cancels_its_writes_and_frees_its_flight() -> None:
    async def main() -> None:
        recorder = Recorder()
        gatherer: Gatherer[int, int] = Gatherer(recorder.run, flights=1)
        write = asyncio.create_task(gatherer.submit(1))
        await asyncio.sleep(0)  # the batch's task exists and has not run a step
        (flight,) = gatherer._tasks
        flight.cancel()
        with pytest.raises(asyncio.CancelledError):
            await write
        assert recorder.batches == []
        assert await gatherer.submit(2) == 4  # the flight was given back

    asyncio.run(main())


def test_a_failure_reaches_each_write_as_its_own_exception() -> None:
    async def main() -> None:
        gate = asyncio.Event()

        async def run(writes: list[int]) -> Sequence[int | BaseException]:
            await gate.wait()
            raise RuntimeError("the statement failed")

        gatherer: Gatherer[int, int] = Gatherer(run, flights=1)
        first = asyncio.create_task(gatherer.submit(0))
        await asyncio.sleep(0)
        tasks = [asyncio.create_task(gatherer.submit(w)) for w in (1, 2)]
        await asyncio.sleep(0)
        gate.set()
        errors = await asyncio.gather(first, *tasks, return_exceptions=True)
        assert all(isinstance(e, RuntimeError) for e in errors)
        assert errors[1] is not errors[2]

    asyncio.run(main())

    asyncio.run(main())


def test_a_write_cancelled_before_its_batch_left_is_not_written() -> None:
    async def main() -> None:
        recorder = Recorder()
        recorder.release.clear()
        gatherer: Gatherer[int, int] = Gatherer(recorder.run, flights=1)
        first = asyncio.create_task(gatherer.submit(1))
        await asyncio.sleep(0)
        cancelled = asyncio.create_task(gatherer.submit(2))
        kept = asyncio.create_task(gatherer.submit(3))
        await asyncio.sleep(0)
        cancelled.cancel()
        recorder.release.set()
        assert (await first, await kept) == (2, 6)
        assert cancelled.cancelled()
        assert recorder.batches == [[1], [3]]

    asyncio.run(main())


def test_a_running_batch_whose_writes_were_all_cancelled_is_cancelled() -> None:
    async def main() -> None:
        gate, started, stopped = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def run(writes: list[int]) -> Sequence[int | BaseException]:
            if writes == [0]:
                await gate.wait()  # holds the one flight while 1 and 2 gather behind it
                return writes
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                stopped.set()
                raise
            return writes

        gatherer: Gatherer[int, int] = Gatherer(run, flights=1)
        first = asyncio.create_task(gatherer.submit(0))
        await asyncio.sleep(0)
        writes = [asyncio.create_task(gatherer.submit(w)) for w in (1, 2)]
        await asyncio.sleep(0)
        gate.set()
        assert await first == 0
        await started.wait()
        writes[0].cancel()
        await asyncio.sleep(0.01)
        assert not stopped.is_set()  # the second write still needs the batch
        writes[1].cancel()
        await asyncio.wait_for(stopped.wait(), 1)
        assert all(w.cancelled() for w in writes)
        assert gatherer.batches == 2

    asyncio.run(main())
