"""``loss:`` config section (Dice + CE); kept free of torch imports so configs load fast."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from medseg.config import Section


class LossConfig(Section):
    """Dice + cross-entropy, nnU-Net defaults (region-based plans: Dice + binary cross-entropy per region, ce_weight weighting the BCE)."""

    name: Literal["dice_ce"] = Field("dice_ce", description="loss function; only dice_ce for now")
    include_background: bool = Field(False, description="count the background class in the Dice term")
    batch_dice: bool = Field(
        False, description="one Dice per class over the whole batch (nnU-Net batch_dice) instead of per sample"
    )
    smooth_nr: float = Field(1e-5, ge=0.0, description="added to the Dice numerator")
    smooth_dr: float = Field(1e-5, ge=0.0, description="added to the Dice denominator")
    ignore_label: int | None = Field(
        None, description="label value that counts for neither Dice nor CE (unannotated voxels); None = the plan's ignore label, if any"
    )
    dice_weight: float = Field(1.0, ge=0.0, description="weight of the Dice term")
    ce_weight: float = Field(1.0, ge=0.0, description="weight of the cross-entropy term")
    deep_supervision_weights: list[float] | None = Field(
        None,
        description="weight per output, full resolution first (normalized); None = nnU-Net's 1/2^i with the "
        "coarsest output at 0",
    )
