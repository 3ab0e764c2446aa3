"""``loss:`` config section (Dice + CE); kept free of torch imports so configs load fast."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from medseg.config import Section


class ObjectnessLossConfig(Section):
    """The lesion-centre term of models with an objectness head (``model.name: lesion_instances``); see
    :mod:`medseg.losses.objectness` for the target and the focal loss."""

    weight: float = Field(
        0.1, ge=0.0, description="weight of the objectness focal term next to Dice + CE. 0.1: with 1.0 the focal term (about 4 "
        "early on, against about 1 for Dice + CE) held back the tumour class of the shared decoder: on 8 synthetic test cases, "
        "after 1000 steps, 9 of 14 tumours found and AP 0.64 with 1.0, 14 of 14 and AP 1.00 with 0.1 (reports/architectures.md). "
        "0 = the head learns only through the segmentation output, so its confidences mean little (inference then says so)"
    )
    lesion_labels: list[str | int] | None = Field(
        None, description="labels (names or indices) whose connected lesions get centre targets; None = infer.lesion_labels, "
        "else the labels named like lesions (tumor, lesion, metastasis, nodule, ...)"
    )
    sigma_voxels: float = Field(
        1.0, gt=0.0, description="fall-off of the centre heatmap in voxels of the training grid: target exp(-(m - d)^2 / 2 sigma^2) "
        "with d a voxel's depth inside its lesion and m the lesion's largest depth"
    )
    max_depth_voxels: int = Field(
        8, ge=1, le=64, description="depths are counted up to this (and the lesion's largest depth is looked for this far): "
        "deeper cores of larger lesions all count as centre; cost is 2 x this many 3x3x3 max-pools per step"
    )
    alpha: float = Field(2.0, ge=0.0, description="focal exponent on the predicted probability (CenterNet: 2)")
    beta: float = Field(4.0, ge=0.0, description="how much voxels near a centre are spared as negatives, (1 - target)^beta (CenterNet: 4)")


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
    objectness: ObjectnessLossConfig = Field(
        default_factory=ObjectnessLossConfig,
        description="lesion-centre (objectness) term; applies only to models with an objectness head (lesion_instances)",
    )
