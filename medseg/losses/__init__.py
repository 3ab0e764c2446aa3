"""Training losses. ``build_loss(config)`` gives a loss that takes a model's output (one tensor or the
deep-supervision list) and integer targets. Attributes load lazily so the config imports no torch.
"""

from __future__ import annotations

from medseg._lazy import lazy_exports

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

__getattr__ = lazy_exports("medseg.losses", _EXPORTS)
