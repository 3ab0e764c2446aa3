"""Rich progress display for training: epoch, iterations/s, loss, LR, ETA (on a terminal; elsewhere notes are INFO logs).

The bar shows the fraction of the run that is done (by iterations, or by wall time under a time budget), while the
iteration count and speed shown are the real optimizer steps, so a time-budgeted run never shows a made-up step count.
"""

from __future__ import annotations

import logging
import time

from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from medseg.logging_setup import new_progress

log = logging.getLogger(__name__)


class TrainingProgress:
    def __init__(self, enabled: bool, total: int) -> None:
        self.progress = new_progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            TextColumn("{task.fields[iteration]}/{task.fields[planned]} it  {task.fields[speed]:.2f} it/s  loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            enabled=enabled,
            transient=False,
        )
        self.enabled = enabled and not self.progress.disable
        self.task = self.progress.add_task("train", total=1.0, epoch=0, iteration=0, planned=total, speed=0.0,
                                           loss=float("nan"), lr=0.0)
        self._first: tuple[int, float] | None = None

    def __enter__(self) -> TrainingProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def update(self, epoch: int, fraction: float, iteration: int, loss: float, lr: float) -> None:
        """`fraction` of the run done (0..1); `iteration` the optimizer steps taken so far (resumed runs included)."""
        now = time.perf_counter()
        if self._first is None:
            self._first = (iteration, now)
        first_iteration, first_time = self._first
        speed = (iteration - first_iteration) / (now - first_time) if now > first_time else 0.0
        self.progress.update(self.task, completed=min(max(fraction, 0.0), 1.0), epoch=epoch + 1, iteration=iteration,
                             loss=loss, lr=lr, speed=speed)

    def note(self, message: str) -> None:
        if self.enabled:
            self.progress.console.log(message)
        else:
            log.info(message)
