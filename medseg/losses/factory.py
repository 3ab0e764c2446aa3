"""``build_loss``: the configured loss, wrapped so that it accepts deep-supervision output lists."""

from __future__ import annotations

from medseg.errors import ConfigError
from medseg.losses.config import LossConfig
from medseg.losses.dice_ce import DeepSupervisionLoss, DiceCELoss


def build_loss(config: LossConfig) -> DeepSupervisionLoss:
    """Loss module ``loss(model_output, target)`` for a ``LossConfig``."""
    if config.dice_weight == 0 and config.ce_weight == 0:
        raise ConfigError("loss: dice_weight and ce_weight are both 0")
    weights = config.deep_supervision_weights
    if weights is not None and (any(w < 0 for w in weights) or sum(weights) <= 0):
        raise ConfigError(f"loss.deep_supervision_weights {weights} must be >= 0 with a positive sum")
    base = DiceCELoss(
        include_background=config.include_background,
        batch_dice=config.batch_dice,
        smooth_nr=config.smooth_nr,
        smooth_dr=config.smooth_dr,
        ignore_label=config.ignore_label,
        dice_weight=config.dice_weight,
        ce_weight=config.ce_weight,
    )
    return DeepSupervisionLoss(base, weights)
