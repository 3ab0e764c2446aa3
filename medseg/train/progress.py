"""Rich progress display for training: epoch, iterations/s, loss, LR, ETA (on a terminal; elsewhere notes are INFO logs)."""

from __future__ import annotations

import logging

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from medseg.logging_setup import new_progress

log = logging.getLogger(__name__)


class TrainingProgress:
    def __init__(self, enabled: bool, total: int) -> None:
        self.progress = new_progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[speed]:.2f} it/s  loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            enabled=enabled,
            transient=False,
        )
        self.enabled = enabled and not self.progress.disable
        self.task = self.progress.add_task("train", total=total, epoch=0, speed=0.0, loss=float("nan"), lr=0.0)

    def __enter__(self) -> TrainingProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def update(self, epoch: int, completed: float, loss: float, lr: float) -> None:
        task = self.progress.tasks[0]
        speed = task.speed or 0.0
        self.progress.update(self.task, completed=completed, epoch=epoch + 1, loss=loss, lr=lr, speed=speed)

    def note(self, message: str) -> None:
        if self.enabled:
            self.progress.console.log(message)
        else:
            log.info(message)
