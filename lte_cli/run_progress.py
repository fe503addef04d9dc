"""A progress bar per experiment run: steps of the current epoch, and one line per finished
run. It renders :class:`~offline.experiment.runner.RunProgress` reports only, so the
experiment code stays free of terminal concerns."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

if TYPE_CHECKING:
    from offline.experiment.runner import ProgressCallback, RunProgress


class RunProgressBars:
    def __init__(self, *, disabled: bool = False) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.3f} val NDCG@10 {task.fields[val]:.4f}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            disable=disabled,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> RunProgressBars:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def listener(
        self, protocol: str, variant: str, seed: int, number: int, total: int
    ) -> ProgressCallback:
        if self._task is not None:
            self._progress.stop_task(self._task)
        task = self._progress.add_task(
            f"[{number}/{total}] {protocol} {variant} seed {seed}",
            total=None,
            epoch=0,
            loss=0.0,
            val=0.0,
        )
        self._task = task
        best = [0.0]

        def update(report: RunProgress) -> None:
            if report.validation_ndcg is not None:
                best[0] = max(best[0], report.validation_ndcg)
            self._progress.update(
                task,
                completed=report.step,
                total=report.steps,
                epoch=report.epoch,
                loss=report.loss,
                val=best[0],
            )

        return update
