"""Dice + cross-entropy with an ignore label, and nnU-Net's deep-supervision weighting.

MONAI's ``DiceCELoss`` has no ignore label (voxels with an unknown/unannotated label that must
count for neither term), so the soft Dice is written here: softmax probabilities and the one-hot
target are both zeroed on ignored voxels before the sums, which removes them from intersection
and denominators and gives them zero gradient. With no ignore label and equal smooth terms the
result equals MONAI's ``DiceCELoss(to_onehot_y=True, softmax=True)`` (a test checks this).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def as_label_index(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``(B, *spatial)`` or ``(B, 1, *spatial)`` integer-valued labels -> ``(B, 1, *spatial)`` int64."""
    if target.ndim == logits.ndim - 1:
        target = target.unsqueeze(1)
    if target.ndim != logits.ndim or target.shape[1] != 1:
        raise ValueError(
            f"target shape {tuple(target.shape)} must be (B, 1, *spatial) or (B, *spatial) "
            f"for logits {tuple(logits.shape)}"
        )
    if target.shape[0] != logits.shape[0] or target.shape[2:] != logits.shape[2:]:
        raise ValueError(
            f"target {tuple(target.shape)} and logits {tuple(logits.shape)} differ in batch or spatial size"
        )
    return target.long()


class DiceCELoss(nn.Module):
    """``dice_weight * (1 - mean soft Dice) + ce_weight * CE`` on logits ``(B, C, *spatial)``.

    * ``include_background=False`` drops channel 0 from the Dice term (CE always uses all classes).
    * ``batch_dice=True`` sums intersections and volumes over the batch before dividing (nnU-Net's
      ``batch_dice``): one Dice per class for the batch instead of one per sample and class, which
      is less noisy for small structures missing from some patches.
    * ``smooth_nr`` / ``smooth_dr`` are added to the Dice numerator / denominator.
    * ``ignore_label``: target voxels with this value count for neither term; any integer works
      (e.g. 255, -1 or ``C``), it does not need an output channel.
    """

    def __init__(
        self,
        include_background: bool = False,
        batch_dice: bool = False,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        ignore_label: int | None = None,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
    ):
        super().__init__()
        self.include_background = include_background
        self.batch_dice = batch_dice
        self.smooth_nr = float(smooth_nr)
        self.smooth_dr = float(smooth_dr)
        self.ignore_label = ignore_label
        self.dice_weight = float(dice_weight)
        self.ce_weight = float(ce_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] < 2:
            raise ValueError("DiceCELoss needs >= 2 output channels (background + classes) for the softmax")
        target = as_label_index(target, logits)
        logits = logits.float()  # softmax and sums in fp32 even under autocast
        valid = None
        if self.ignore_label is not None:
            valid = target != self.ignore_label
            target = target.masked_fill(~valid, 0)
        loss = logits.new_zeros(())
        if self.ce_weight:
            loss = loss + self.ce_weight * self._cross_entropy(logits, target, valid)
        if self.dice_weight:
            loss = loss + self.dice_weight * (1.0 - self.dice_per_class(logits, target, valid).mean())
        return loss

    @staticmethod
    def _cross_entropy(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        if valid is None:
            return F.cross_entropy(logits, target[:, 0])
        per_voxel = F.cross_entropy(logits, target[:, 0], reduction="none")
        mask = valid[:, 0]
        # Mean over annotated voxels; a batch that is all ignore gives 0 instead of NaN.
        return (per_voxel * mask).sum() / mask.sum().clamp_min(1)

    def dice_per_class(
        self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Soft Dice per class: ``(B, C')``, or ``(C',)`` with batch Dice.

        ``target`` is ``(B, 1, *)`` with ignored voxels already replaced by a valid class and
        flagged in ``valid``.
        """
        probs = torch.softmax(logits, dim=1)
        onehot = torch.zeros_like(probs).scatter_(1, target, 1.0)
        if not self.include_background:
            probs, onehot = probs[:, 1:], onehot[:, 1:]
        return soft_dice(probs, onehot, valid, self.batch_dice, self.smooth_nr, self.smooth_dr)


def soft_dice(probs: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None, batch_dice: bool,
              smooth_nr: float, smooth_dr: float) -> torch.Tensor:
    """Soft Dice per channel of ``(B, C, *)`` probabilities and targets: ``(B, C)``, or ``(C,)`` with batch Dice.

    ``valid`` (``(B, 1, *)``, 1 = annotated) zeroes ignored voxels on both sides; shared by the softmax and the
    region (sigmoid) losses so both score exactly the same way.
    """
    if valid is not None:
        mask = valid.to(probs.dtype)
        probs, targets = probs * mask, targets * mask
    axes = tuple(range(2, probs.ndim))
    if batch_dice:
        axes = (0, *axes)
    intersection = (probs * targets).sum(axes)
    denominator = probs.sum(axes) + targets.sum(axes)
    return (2.0 * intersection + smooth_nr) / (denominator + smooth_dr).clamp_min(1e-8)


def deep_supervision_weights(n_outputs: int) -> list[float]:
    """nnU-Net: weight ``1/2**i`` for output ``i`` (0 = full resolution), the coarsest set to 0, normalized to 1."""
    if n_outputs < 1:
        raise ValueError("need at least one output")
    weights = [0.5**index for index in range(n_outputs)]
    if n_outputs > 1:
        weights[-1] = 0.0
    total = sum(weights)
    return [weight / total for weight in weights]


def downsample_target(target: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize of an integer label map ``(B, 1, *spatial)``; labels (and the ignore label) survive."""
    if tuple(target.shape[2:]) == tuple(size):
        return target
    return F.interpolate(target.float(), size=tuple(size), mode="nearest-exact").long()


class DeepSupervisionLoss(nn.Module):
    """Applies ``loss`` to one tensor, or to each output of the registry's list ``[full, down1, ...]``.

    Each lower-resolution output is scored against the target resized (nearest) to its size; the
    terms are summed with ``weights`` (default :func:`deep_supervision_weights`, normalized to 1).
    Outputs with weight 0 (nnU-Net's coarsest) are not scored; their gradient is exactly zero.
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float] | None = None):
        super().__init__()
        self.loss = loss
        if weights is not None and (not weights or any(w < 0 for w in weights) or sum(weights) <= 0):
            raise ValueError(f"deep supervision weights {list(weights)} must be non-negative with a positive sum")
        self.weights = None if weights is None else [float(w) for w in weights]

    def weights_for(self, n_outputs: int) -> list[float]:
        if self.weights is None:
            return deep_supervision_weights(n_outputs)
        if len(self.weights) < n_outputs:
            raise ValueError(f"{len(self.weights)} deep supervision weights for {n_outputs} outputs")
        weights = self.weights[:n_outputs]
        total = sum(weights)
        if total <= 0:
            raise ValueError(f"deep supervision weights {weights} for {n_outputs} outputs sum to 0")
        return [w / total for w in weights]

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, target)
        outputs = list(outputs)
        target = as_label_index(target, outputs[0])
        total = outputs[0].new_zeros((), dtype=torch.float32)
        for weight, output in zip(self.weights_for(len(outputs)), outputs):
            if weight:
                total = total + weight * self.loss(output, downsample_target(target, output.shape[2:]))
            else:
                # Keep excluded heads in the graph (zero gradient) so DDP sees every parameter used
                # and needs no find_unused_parameters.
                total = total + 0.0 * output.float().sum()
        return total
