"""Run one function per case in worker processes, with a progress bar and per-case errors.

A failing case never stops the others and never surfaces as an opaque "worker died": exceptions
are caught inside the worker and come back as one-line messages naming the file, and a worker
that is killed (out of memory, crash in a native library) is reported against the cases it was
running. Workers start with the ``forkserver`` method: forking a process that already runs the
progress-bar thread could copy a held console lock into the child.
"""

from __future__ import annotations

import logging
import multiprocessing
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

# A pool breaks when a worker is killed (usually out of memory) or, in user scripts, when the
# calling module starts work at import time without an ``if __name__ == "__main__":`` guard.
WORKER_DIED = (
    "a worker process died while this case was queued or running (out of memory, or a script calling "
    "medseg without an `if __name__ == \"__main__\":` guard); rerun with --workers 1"
)

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from medseg.errors import MedsegError
from medseg.logging_setup import new_progress

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    key: str
    value: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def describe_error(error: BaseException) -> str:
    """One line: user-facing errors as they are (they name their file), bugs with type and location."""
    if isinstance(error, MedsegError):
        return str(error)
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}{where}"[:500]


def _guarded(function: Callable[[Any], Any], key: str, argument: Any) -> Outcome:
    try:
        return Outcome(key, function(argument))
    except Exception as error:  # reported per case, the other cases go on
        return Outcome(key, error=describe_error(error))


def _init_worker(threads: int) -> None:
    try:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    except Exception:  # pragma: no cover - SimpleITK is a dependency; never fail a worker over threads
        pass


def progress_bar(enabled: bool = True) -> Progress:
    return new_progress(
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        enabled=enabled,
        transient=False,
    )


def map_cases(
    function: Callable[[Any], Any],
    items: Sequence[tuple[str, Any]],
    *,
    workers: int = 2,
    description: str = "cases",
    progress: bool = True,
) -> Iterator[Outcome]:
    """Yield an :class:`Outcome` per ``(key, argument)`` as cases finish (order not guaranteed).

    ``function`` must be a module-level function (it is pickled to the workers). ``workers=1``
    runs everything in this process, which is what tests and debuggers want.
    """
    items = list(items)
    if not items:
        return
    workers = max(1, min(workers, len(items)))
    with progress_bar(progress) as bar:
        task = bar.add_task(description, total=len(items))
        if workers == 1:
            for key, argument in items:
                outcome = _guarded(function, key, argument)
                bar.advance(task)
                yield outcome
            return
        context = multiprocessing.get_context("forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
        threads = max(1, (multiprocessing.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(threads,)) as pool:
            pending: dict[Future, str] = {}
            queue = list(items)
            # Keep only a few tasks queued per worker, so a broken pool names the cases it was on.
            while queue or pending:
                while queue and len(pending) < 2 * workers:
                    key, argument = queue.pop(0)
                    pending[pool.submit(_guarded, function, key, argument)] = key
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                broken = False
                for future in done:
                    key = pending.pop(future)
                    try:
                        outcome = future.result()
                    except BrokenProcessPool:
                        broken = True
                        outcome = Outcome(key, error=WORKER_DIED)
                    bar.advance(task)
                    yield outcome
                if broken:
                    for future, key in pending.items():
                        bar.advance(task)
                        yield Outcome(key, error=WORKER_DIED)
                    for key, _ in queue:
                        bar.advance(task)
                        yield Outcome(key, error="not run: the worker pool broke down earlier; rerun to continue")
                    return
