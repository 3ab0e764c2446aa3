"""``build_loss``: the configured loss, wrapped so that it accepts deep-supervision output lists."""

from __future__ import annotations

from torch import nn

from medseg.errors import ConfigError
from medseg.losses.config import LossConfig
from medseg.losses.dice_ce import DeepSupervisionLoss, DiceCELoss
from medseg.losses.regions import RegionDiceBCELoss


def build_loss(config: LossConfig, regions: list[tuple[int, ...]] | None = None, ignore_label: int | None = None,
               objectness_values: tuple[int, ...] | None = None) -> nn.Module:
    """Loss module ``loss(model_output, target)`` for a ``LossConfig``.

    ``regions`` (a region-based plan): BCE + Dice on one sigmoid output per region instead of Dice +
    CE on softmax classes. ``ignore_label`` (the plan's) applies unless the config names its own.
    ``objectness_values`` (a model with an objectness head): the lesion label values whose centres the
    ``loss.objectness`` term targets; the result is then an :class:`~medseg.losses.objectness.InstanceLoss`.
    """
    semantic = _semantic_loss(config, regions, ignore_label)
    if objectness_values is None:
        return semantic
    from medseg.losses.objectness import InstanceLoss, ObjectnessLoss

    ignore = config.ignore_label if config.ignore_label is not None else ignore_label
    objectness = ObjectnessLoss(objectness_values, config.objectness, ignore_label=ignore)
    return InstanceLoss(semantic, objectness, config.objectness.weight)


def _semantic_loss(config: LossConfig, regions: list[tuple[int, ...]] | None, ignore_label: int | None) -> DeepSupervisionLoss:
    if config.dice_weight == 0 and config.ce_weight == 0:
        raise ConfigError("loss: dice_weight and ce_weight are both 0")
    weights = config.deep_supervision_weights
    if weights is not None and (any(w < 0 for w in weights) or sum(weights) <= 0):
        raise ConfigError(f"loss.deep_supervision_weights {weights} must be >= 0 with a positive sum")
    ignore = config.ignore_label if config.ignore_label is not None else ignore_label
    if regions:
        base = RegionDiceBCELoss(regions, ignore_label=ignore, batch_dice=config.batch_dice, smooth_nr=config.smooth_nr,
                                 smooth_dr=config.smooth_dr, dice_weight=config.dice_weight, bce_weight=config.ce_weight)
        return DeepSupervisionLoss(base, weights)
    base = DiceCELoss(
        include_background=config.include_background,
        batch_dice=config.batch_dice,
        smooth_nr=config.smooth_nr,
        smooth_dr=config.smooth_dr,
        ignore_label=ignore,
        dice_weight=config.dice_weight,
        ce_weight=config.ce_weight,
    )
    return DeepSupervisionLoss(base, weights)
