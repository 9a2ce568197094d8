"""Background tasks of a process (the purger, the metrics' gauges): each started when the ASGI
lifespan starts and stopped when it ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from cbstop.errors import ServiceUnavailable
from cbstop.observability.logging import Throttle, log

T = TypeVar("T")


async def guarded(trouble: Throttle, doing: str, work: Awaitable[T]) -> T | None:
    """`work`'s result, or None if it failed, for a background task that tries again at its
    next turn. The database being unavailable is one warning line per `trouble`'s interval,
    said here rather than left to requests (a statement timeout may be the task's alone);
    anything else is logged with its traceback."""
    try:
        return await work
    except ServiceUnavailable as exc:
        trouble.warn(doing, exc)
    except Exception:
        log.exception("%s failed", doing)
    return None


async def cancelled(task: asyncio.Task[None] | None) -> None:
    """Cancel `task`, if there is one, and wait until it has ended."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
