"""nnU-Net's poly learning rate on the wall clock, so that a budgeted nnU-Net anneals at the end of its budget.

nnU-Net steps ``PolyLRScheduler`` once per epoch over 1000 epochs of 250 iterations; cut off after 30 minutes it
would still train at almost its initial rate. medseg's trainer takes its progress as the larger of iterations done
and time spent (:func:`medseg.train.schedule.training_progress`) and sets ``lr0 * (1 - progress)^0.9`` before every
step; this scheduler does the same for nnU-Net, with nnU-Net's own ``initial_lr``, exponent and iteration count.
It has nnU-Net's scheduler interface (``step``, ``get_last_lr``): the trainer's once-per-epoch ``step(epoch)``
call only re-applies the rate for now.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from medseg.train.schedule import poly_lr, training_progress


class WallClockPolyLR:
    """``lr = initial_lr * (1 - progress)^exponent``; progress = max(iterations / total, elapsed / budget)."""

    def __init__(self, optimizer: Any, initial_lr: float, budget_s: float, total_iterations: int, exponent: float = 0.9,
                 clock: Callable[[], float] = time.perf_counter):
        if budget_s <= 0:
            raise ValueError(f"the budget must be positive, got {budget_s} s")
        self.optimizer, self.initial_lr, self.budget_s = optimizer, initial_lr, budget_s
        self.total_iterations, self.exponent, self.clock = total_iterations, exponent, clock
        self.started: float | None = None
        self.iterations = 0
        self._last_lr = [initial_lr]

    def start(self) -> None:
        """Start the budget's clock (the trainer calls it right before its first iteration)."""
        self.started = self.clock()

    def elapsed_s(self) -> float:
        return 0.0 if self.started is None else self.clock() - self.started

    def progress(self) -> float:
        return training_progress(self.iterations, self.total_iterations, self.elapsed_s(), self.budget_s)

    def expired(self) -> bool:
        """Whether the budget (or nnU-Net's own iteration count) is used up."""
        return self.started is not None and self.progress() >= 1.0

    def advance(self) -> None:
        """One training iteration done."""
        self.iterations += 1

    def step(self, current_step: int | None = None) -> None:
        """Set the rate for now; nnU-Net's ``current_step`` (its epoch) is ignored on purpose."""
        if self.started is None:
            self.start()
        lr = poly_lr(self.initial_lr, self.progress(), self.exponent)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [lr]

    def get_last_lr(self) -> list[float]:
        return self._last_lr
