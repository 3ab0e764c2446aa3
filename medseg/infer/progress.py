"""Rich progress for `medseg infer`: one bar over cases, one over the current case's windows."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from medseg.logging_setup import new_progress


class InferProgress:
    """Does nothing when disabled (API calls, tests); the CLI enables it."""

    def __init__(self, enabled: bool, cases: int) -> None:
        self.enabled = enabled
        # Case names are shown literally (markup=False); the bar exists only on a terminal (see new_progress).
        self.progress = new_progress(
            TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), enabled=enabled, transient=False,
        )
        self.cases = self.progress.add_task("cases", total=cases)
        self.windows = self.progress.add_task("windows", total=1, visible=False)

    def __enter__(self) -> InferProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def start_case(self, name: str) -> None:
        self.progress.update(self.cases, description=f"case {name}")

    def start_windows(self, total: int) -> None:
        self.progress.reset(self.windows, total=max(total, 1), visible=self.enabled and total > 1, description="  windows")

    def advance_windows(self, count: int) -> None:
        self.progress.advance(self.windows, count)

    def finish_case(self) -> None:
        self.progress.advance(self.cases)
        self.progress.update(self.windows, visible=False)
