"""Region-based loss (nnU-Net v2 ``DC_and_BCE_loss``): BCE + soft Dice on one sigmoid output per region.

The target stays an integer label map all the way to the device; region targets are made here by
one table lookup (region ``r`` is on where the label is one of its values), so caches, sampling,
augmentation and deep-supervision downsampling are the same as for label-based training. Voxels
with the ignore label count for neither term (zero weight in BCE, removed from Dice sums), and
every region is scored in the Dice term (there is no background output).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medseg.losses.dice_ce import as_label_index, soft_dice


def region_table(regions: Sequence[Sequence[int]], ignore_label: int | None = None) -> torch.Tensor:
    """``(max label + 1, R)`` float table: row ``v`` says which regions label ``v`` belongs to."""
    top = max([value for region in regions for value in region] + [0 if ignore_label is None else ignore_label])
    table = torch.zeros((top + 1, len(regions)), dtype=torch.float32)
    for index, region in enumerate(regions):
        table[list(region), index] = 1.0
    return table


def region_targets(target: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``(B, 1, *spatial)`` integer labels -> ``(B, R, *spatial)`` float region masks."""
    indices = target[:, 0].clamp(0, table.shape[0] - 1)
    return table.to(target.device)[indices].movedim(-1, 1)


class RegionDiceBCELoss(nn.Module):
    """``dice_weight * (1 - mean soft Dice over regions) + bce_weight * BCE`` on logits ``(B, R, *spatial)``."""

    def __init__(self, regions: Sequence[Sequence[int]], ignore_label: int | None = None, batch_dice: bool = False,
                 smooth_nr: float = 1e-5, smooth_dr: float = 1e-5, dice_weight: float = 1.0, bce_weight: float = 1.0):
        super().__init__()
        if not regions:
            raise ValueError("RegionDiceBCELoss needs at least one region")
        self.regions = [tuple(int(v) for v in region) for region in regions]
        self.ignore_label, self.batch_dice = ignore_label, batch_dice
        self.smooth_nr, self.smooth_dr = float(smooth_nr), float(smooth_dr)
        self.dice_weight, self.bce_weight = float(dice_weight), float(bce_weight)
        self.register_buffer("table", region_table(self.regions, ignore_label), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] != len(self.regions):
            raise ValueError(f"{logits.shape[1]} output channels for {len(self.regions)} regions")
        target = as_label_index(target, logits)
        logits = logits.float()
        targets = region_targets(target, self.table)
        valid = None if self.ignore_label is None else (target != self.ignore_label).to(logits.dtype)  # (B, 1, *)
        loss = logits.new_zeros(())
        if self.bce_weight:
            per_voxel = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
            if valid is None:
                bce = per_voxel.mean()
            else:
                bce = (per_voxel * valid).sum() / (valid.sum() * logits.shape[1]).clamp_min(1)
            loss = loss + self.bce_weight * bce
        if self.dice_weight:
            loss = loss + self.dice_weight * (1.0 - self.dice_per_region(logits, targets, valid).mean())
        return loss

    def dice_per_region(self, logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Soft Dice per region: ``(B, R)``, or ``(R,)`` with batch Dice."""
        return soft_dice(torch.sigmoid(logits), targets, valid, self.batch_dice, self.smooth_nr, self.smooth_dr)
