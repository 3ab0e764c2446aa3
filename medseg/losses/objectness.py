"""The lesion-centre (objectness) term of :mod:`medseg.models.lesion_instances`, with its targets made on the fly.

**Target.** From the integer label map of the patch (nothing precomputed, nothing cached): the lesion
mask ``L`` is the union of the configured lesion labels. ``d`` is each lesion voxel's *depth*, the
number of 3x3x3 erosions it survives (chessboard distance to the lesion's border in voxels of the
training grid, counted up to ``max_depth_voxels``; the patch border does not erode, so a lesion cut by
the patch keeps its depth). ``m`` is the largest depth reachable inside the lesion within
``max_depth_voxels`` steps (a max-pool propagated inside ``L``, 26-connected like lesion components),
i.e. the depth of that lesion's centre. The heatmap is

    t = exp(-(m - d)^2 / (2 sigma^2))  inside lesions,  0 outside,

which is CenterNet's Gaussian "object as a point", centred on the lesion's deepest voxels rather than
on its centroid: that needs no component labelling (all max-pools, on the device, no host sync), and the
peak stays inside non-convex lesions (the centroid of a C-shaped lesion can lie outside it). A small
lesion (depth 1 everywhere) is all peak; a large one has a peak core and a ring falling off by sigma.
Touching lesions are one component in the label map, so they are one object here too.

**Loss.** CenterNet's penalty-reduced focal loss on the head's logit ``x`` (``p = sigmoid(x)``)::

    peaks (t == 1):  -(1 - p)^alpha log p
    elsewhere:       -(1 - t)^beta p^alpha log(1 - p)

summed over the batch's voxels and divided by the number of peak voxels (at least 1). Ignored voxels
(the ignore label) count for nothing. The head is initialised to p = 0.01 everywhere
(:data:`medseg.models.lesion_instances.PRIOR_PROBABILITY`), so the sum over the many background
voxels starts near 0.2 for a 200k-voxel patch instead of dominating Dice + CE.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medseg.errors import ConfigError
from medseg.losses.config import ObjectnessLossConfig
from medseg.losses.dice_ce import as_label_index
from medseg.models.lesion_instances import InstanceOutput


def _max_pool(values: torch.Tensor) -> torch.Tensor:
    """3x3(x3) max-pool, stride 1, same size; padding never wins (max-pool pads with -inf)."""
    pool = F.max_pool3d if values.ndim == 5 else F.max_pool2d
    return pool(values, kernel_size=3, stride=1, padding=1)


@torch.no_grad()
def centre_heatmap(lesions: torch.Tensor, sigma: float = 1.0, max_depth: int = 8) -> torch.Tensor:
    """The module's target ``t`` for a boolean lesion mask ``(B, 1, *spatial)`` (2D or 3D), float32 in [0, 1]."""
    if lesions.ndim not in (4, 5) or lesions.shape[1] != 1:
        raise ValueError(f"lesion mask must be (B, 1, *spatial) in 2D or 3D, got {tuple(lesions.shape)}")
    inside = lesions.float()
    depth = inside.clone()
    eroded = inside
    for _ in range(max_depth - 1):
        eroded = -_max_pool(-eroded)  # min-pool: an erosion that treats outside the patch as lesion
        depth += eroded  # (no early stop when nothing is left: that would cost a host sync per step)
    centre = depth
    for _ in range(max_depth):
        centre = _max_pool(centre) * inside  # the deepest depth within reach, staying inside the lesion
    return torch.exp(-((centre - depth) ** 2) / (2.0 * sigma**2)) * inside


def focal_objectness(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
                     alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (see the module docstring); ``valid`` (bool, like ``target``) masks voxels out."""
    logits = logits.float()
    probability = torch.sigmoid(logits)
    peak = target >= 1.0
    positive = -F.logsigmoid(logits) * (1.0 - probability) ** alpha
    negative = -F.logsigmoid(-logits) * probability**alpha * (1.0 - target) ** beta
    per_voxel = torch.where(peak, positive, negative)
    if valid is not None:
        per_voxel = per_voxel * valid
        peak = peak & valid
    return per_voxel.sum() / peak.sum().clamp_min(1)


class ObjectnessLoss(nn.Module):
    """Focal loss of objectness logits ``(B, 1, *spatial)`` against centre heatmaps of ``lesion_values`` in the label map."""

    def __init__(self, lesion_values: Sequence[int], config: ObjectnessLossConfig | None = None, ignore_label: int | None = None):
        super().__init__()
        if not lesion_values:
            raise ValueError("ObjectnessLoss needs at least one lesion label value")
        self.config = config or ObjectnessLossConfig()
        self.ignore_label = ignore_label
        self.register_buffer("values", torch.tensor(sorted({int(v) for v in lesion_values})), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] != 1:
            raise ValueError(f"objectness logits must have one channel, got {logits.shape[1]}")
        target = as_label_index(target, logits)
        lesions = torch.isin(target, self.values.to(target.device))
        heatmap = centre_heatmap(lesions, self.config.sigma_voxels, self.config.max_depth_voxels)
        valid = None if self.ignore_label is None else target != self.ignore_label
        return focal_objectness(logits, heatmap, valid, self.config.alpha, self.config.beta)


class InstanceLoss(nn.Module):
    """``semantic(output, target) + weight * objectness(logits, target)`` for :class:`InstanceOutput` s.

    A plain output (a tensor or the deep-supervision list: what validation and the contract feed it)
    gets the semantic loss alone, so this is a drop-in replacement for the semantic loss.
    """

    def __init__(self, semantic: nn.Module, objectness: ObjectnessLoss, weight: float = 1.0):
        super().__init__()
        self.semantic, self.objectness, self.weight = semantic, objectness, float(weight)

    def forward(self, output: torch.Tensor | list[torch.Tensor] | InstanceOutput, target: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, InstanceOutput):
            return self.semantic(output, target)
        loss = self.semantic(output.semantic, target)
        if not self.weight:
            return loss + 0.0 * output.objectness.float().sum()  # keep the head in the graph (DDP)
        return loss + self.weight * self.objectness(output.objectness, target)


def objectness_label_values(config: ObjectnessLossConfig, infer_lesion_labels: list[str] | None, labels: dict[int, str]) -> tuple[int, ...]:
    """The label values whose lesions get centre targets: ``config.lesion_labels``, else ``infer.lesion_labels``,
    else the labels named like lesions (the rule of :func:`medseg.infer.postprocess.lesion_label_indices`)."""
    from medseg.infer.config import InferConfig
    from medseg.infer.postprocess import lesion_label_indices

    keys = config.lesion_labels if config.lesion_labels is not None else infer_lesion_labels
    values = lesion_label_indices(InferConfig(lesion_labels=None if keys is None else [str(key) for key in keys]), labels)
    if not values:
        named = ", ".join(f"{index}={name}" for index, name in sorted(labels.items()) if index > 0)
        raise ConfigError(f"loss.objectness: no lesion label to make centre targets from (labels: {named}); "
                          f"set loss.objectness.lesion_labels or infer.lesion_labels")
    return tuple(values)

