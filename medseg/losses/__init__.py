"""Training losses. ``build_loss(config)`` gives a loss that takes a model's output (one tensor or the
deep-supervision list) and integer targets. Attributes load lazily so the config imports no torch.
"""

from __future__ import annotations

from medseg._lazy import lazy_exports

__getattr__, __all__ = lazy_exports("medseg.losses", {
    "medseg.losses.config": ["LossConfig", "ObjectnessLossConfig"],
    "medseg.losses.factory": ["build_loss"],
    "medseg.losses.dice_ce": ["DiceCELoss", "DeepSupervisionLoss", "deep_supervision_weights", "downsample_target"],
    "medseg.losses.regions": ["RegionDiceBCELoss"],
    "medseg.losses.objectness": ["InstanceLoss", "ObjectnessLoss", "centre_heatmap", "focal_objectness"],
})
