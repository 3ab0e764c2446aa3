"""Rich progress display for training: epoch, iterations/s, loss, LR, ETA."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from medseg.logging_setup import err_console


class TrainingProgress:
    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[speed]:.2f} it/s  loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err_console,
            disable=not enabled,
        )
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
