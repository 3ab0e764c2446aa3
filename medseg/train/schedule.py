"""Learning-rate schedules as pure functions of training progress in [0, 1].

Progress is whichever runs out first, iterations or the time budget, so a ``--max-minutes`` run
still anneals its learning rate to the end instead of being cut off at a high rate.
"""

from __future__ import annotations

import math


def poly_lr(base_lr: float, progress: float, exponent: float = 0.9, min_fraction: float = 0.0) -> float:
    """nnU-Net's polynomial decay: lr0 * (1 - progress)^0.9."""
    progress = min(max(progress, 0.0), 1.0)
    return base_lr * max((1.0 - progress) ** exponent, min_fraction)


def warmup_cosine_lr(base_lr: float, progress: float, warmup: float = 0.02, min_fraction: float = 0.0) -> float:
    """Linear warm-up over the first ``warmup`` share of training, then cosine decay."""
    progress = min(max(progress, 0.0), 1.0)
    if warmup > 0 and progress < warmup:
        return base_lr * max(progress / warmup, 1e-3)
    cosine = 0.5 * (1 + math.cos(math.pi * (progress - warmup) / max(1 - warmup, 1e-8)))
    return base_lr * (min_fraction + (1 - min_fraction) * cosine)


def learning_rate(config, progress: float) -> float:
    """The LR for ``progress`` under a :class:`~medseg.train.config.TrainConfig`."""
    if config.schedule == "poly":
        return poly_lr(config.lr, progress, config.poly_exponent, config.min_lr_fraction)
    return warmup_cosine_lr(config.lr, progress, config.warmup_fraction, config.min_lr_fraction)


def training_progress(iteration: int, total_iterations: int, elapsed_s: float, budget_s: float | None) -> float:
    """Fraction of training done: the larger of iteration progress and time progress."""
    progress = iteration / max(total_iterations, 1)
    if budget_s:
        progress = max(progress, elapsed_s / budget_s)
    return min(progress, 1.0)
