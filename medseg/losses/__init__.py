"""Training losses. ``build_loss(config)`` gives a loss that takes a model's output (one tensor or the
deep-supervision list) and integer targets. Attributes load lazily so the config imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LossConfig": "medseg.losses.config",
    "build_loss": "medseg.losses.factory",
    "DiceCELoss": "medseg.losses.dice_ce",
    "DeepSupervisionLoss": "medseg.losses.dice_ce",
    "deep_supervision_weights": "medseg.losses.dice_ce",
    "downsample_target": "medseg.losses.dice_ce",
    "RegionDiceBCELoss": "medseg.losses.regions",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'medseg.losses' has no attribute '{name}'")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
