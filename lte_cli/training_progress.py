"""The training progress bar: steps of the current epoch, and one line per finished epoch.

It only renders the core's :class:`~offline.ae_training.TrainingProgress` reports, so the
training code stays free of terminal concerns (and tests run it without a bar).
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:
    from offline.ae_training import TrainingProgress


class TrainingProgressBar:
    def __init__(self, max_epochs: int, *, disabled: bool = False) -> None:
        self._console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[of]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
            console=self._console,
            disable=disabled,
            transient=True,
        )
        self._task = self._progress.add_task("train", total=None, epoch=0, of=max_epochs, loss=0.0)
        self._disabled = disabled

    def __enter__(self) -> TrainingProgressBar:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def update(self, report: TrainingProgress) -> None:
        self._progress.update(
            self._task,
            completed=report.step,
            total=report.steps_per_epoch,
            epoch=report.epoch,
            loss=report.loss,
        )
        epoch = report.epoch_report
        if epoch is not None and not self._disabled:
            mark = "*" if epoch.improved else " "
            self._progress.console.print(
                f"epoch {epoch.epoch:>3}  train loss {epoch.train_loss:.4f}  "
                f"validation loss {epoch.validation_loss:.4f} {mark}"
            )
