"""The progress of a large load: a Rich bar on stderr per stage; silent for small loads."""

from __future__ import annotations

from typing import Any


class Reporter:
    """A Rich progress bar on stderr for large loads; silent otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> Reporter:
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
        """Start the next stage, of `total` units; the previous one shows as complete."""
        if self._progress is not None:
            self._finish()
            self._task = self._progress.add_task(description, total=max(total, 1))

    def advance(self, n: int) -> None:
        """`n` more units of the current stage are done."""
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, n)
