"""Background tasks of a process (the purger, the metrics' gauges): each started when the ASGI
lifespan starts and stopped when it ends."""

from __future__ import annotations

import asyncio
import contextlib


async def cancelled(task: asyncio.Task[None] | None) -> None:
    """Cancel `task`, if there is one, and wait until it has ended."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
