"""Voxel-wise uncertainty of `medseg infer --save-uncertainty`: predictive entropy and, with TTA or a
fold ensemble, the members' disagreement (mutual information, BALD), plus a per-structure summary.

Units: both maps are in nats divided by ln(K) (K = the model's classes, background included), so
they lie in [0, 1] whatever the number of classes: 0 = all probability on one class, 1 = uniform
over the K classes.

* **entropy** ``H[p̄] = -Σ_k p̄_k ln p̄_k / ln K`` of the final averaged softmax ``p̄`` (the probabilities
  the mask is the argmax of: mean over folds and mirror passes, Gaussian-blended over windows).
* **mutual information** ``H[p̄] - mean_m H[p_m]`` over the M members (folds x TTA passes), the
  part of the entropy that comes from members disagreeing. Only with M > 1; always >= 0 (entropy is
  concave; rounding is clipped).

Memory: members are never kept. Each window returns its mean probabilities and the mean of its
members' entropies, which MONAI stitches like the probabilities (one extra 1-channel output and
its weight map on the model grid); the entropy of the mean is then computed in slabs from the
stitched probabilities, and the mutual information overwrites the expected entropy in place, so
the model grid holds two extra float32 maps. Both go back to the input grid by the same linear
resampling as the class probabilities (:func:`medseg.data.preprocess.restore_image_map`), so they
lie voxel for voxel on the mask. Outside the crop box (where the mask is background by
construction) both are 0.

Region (sigmoid) models have no softmax over exclusive classes; they get no uncertainty maps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from medseg.data.preprocess import restore_image_map
from medseg.infer.postprocess import padded_box
from medseg.schema.case import CaseGeometry

ENTROPY_UNITS = "predictive entropy of the averaged softmax, nats / ln(K): 0 = certain, 1 = uniform over the K classes"
MI_UNITS = "mutual information (BALD): entropy of the mean minus mean of the members' entropies, nats / ln(K); >= 0"
BAND_RULE = "voxels that touch the predicted structure's surface: its outer voxel layer and the background layer around it (26-neighbourhood)"
SLAB_VALUES = 2**24  # probabilities (K x slab) in flight while computing the entropy of the mean


@dataclass
class ModelGridUncertainty:
    """Normalised maps on the preprocessed grid, on the stitching device."""

    entropy: torch.Tensor
    mutual_information: torch.Tensor | None
    classes: int
    members: int


@dataclass
class UncertaintyMaps:
    """Normalised float32 maps on the input grid (the mask's grid)."""

    entropy: np.ndarray
    mutual_information: np.ndarray | None
    classes: int
    members: int


@torch.inference_mode()
def entropy_of_mean(probabilities: torch.Tensor) -> torch.Tensor:
    """``(K, X, Y, Z)`` probabilities -> their entropy ``(X, Y, Z)`` in nats, float32, computed in slabs along X."""
    classes, rows = int(probabilities.shape[0]), int(probabilities.shape[1])
    plane = int(np.prod(probabilities.shape[2:]))
    step = max(1, SLAB_VALUES // max(classes * plane, 1))
    entropy = torch.empty(probabilities.shape[1:], dtype=torch.float32, device=probabilities.device)
    for start in range(0, rows, step):
        entropy[start : start + step] = torch.special.entr(probabilities[:, start : start + step].float()).sum(0)
    return entropy


@torch.inference_mode()  # the stitched tensors are inference tensors: updated in place below
def model_grid_maps(probabilities: torch.Tensor, expected_entropy: torch.Tensor | None, members: int) -> ModelGridUncertainty:
    """Normalised entropy and (with ``expected_entropy``, the stitched mean member entropy in nats) mutual
    information. ``expected_entropy`` is overwritten by the mutual information (no third map)."""
    classes = int(probabilities.shape[0])
    scale = 1.0 / math.log(classes)
    entropy = entropy_of_mean(probabilities)
    mutual = None
    if expected_entropy is not None:
        mutual = expected_entropy.float()
        mutual.neg_().add_(entropy).mul_(scale).clamp_(min=0.0)
    entropy.mul_(scale).clamp_(0.0, 1.0)
    return ModelGridUncertainty(entropy, mutual, classes, members)


def restore_uncertainty(maps: ModelGridUncertainty, geometry: CaseGeometry, compute_device: torch.device | str = "cpu",
                        chunk_mb: int = 256) -> UncertaintyMaps:
    """Both maps back to the input grid (linear, the probabilities' rule); 0 outside the crop box."""
    def back(values: torch.Tensor) -> np.ndarray:
        return restore_image_map(values, geometry, compute_device=compute_device, chunk_mb=chunk_mb, outside=0.0)

    mutual = None if maps.mutual_information is None else back(maps.mutual_information)
    return UncertaintyMaps(back(maps.entropy), mutual, maps.classes, maps.members)


def boundary_band(mask: np.ndarray) -> np.ndarray:
    """:data:`BAND_RULE`: dilation minus erosion by the 3x3x3 cube (outside the array counts as background)."""
    structure = np.ones((3,) * mask.ndim, dtype=bool)
    return ndimage.binary_dilation(mask, structure) & ~ndimage.binary_erosion(mask, structure)


def _mean(values: np.ndarray | None, where: np.ndarray | None = None) -> float | None:
    """Mean of ``values`` (over ``where``; everywhere when None), rounded for the sidecar; None when there is nothing."""
    if values is None or (where is not None and not where.any()) or values.size == 0:
        return None
    return round(float((values if where is None else values[where]).mean(dtype=np.float64)), 6)


def _structure_summary(labels: np.ndarray, value: int, box: tuple[slice, ...] | None, maps: UncertaintyMaps) -> dict[str, Any]:
    entry: dict[str, Any] = {"voxels": 0, "boundary_voxels": 0, "entropy_inside": None, "entropy_boundary": None}
    if maps.mutual_information is not None:
        entry |= {"mutual_information_inside": None, "mutual_information_boundary": None}
    if box is None:
        return entry
    padded = padded_box(box, labels.shape)  # room for the outer layer
    inside = labels[padded] == value
    band = boundary_band(inside)
    entropy = maps.entropy[padded]
    mutual = None if maps.mutual_information is None else maps.mutual_information[padded]
    entry |= {"voxels": int(inside.sum()), "boundary_voxels": int(band.sum()),
              "entropy_inside": _mean(entropy, inside), "entropy_boundary": _mean(entropy, band)}
    if mutual is not None:
        entry |= {"mutual_information_inside": _mean(mutual, inside), "mutual_information_boundary": _mean(mutual, band)}
    return entry


def uncertainty_summary(maps: UncertaintyMaps, labels: np.ndarray, names: dict[int, str]) -> dict[str, Any]:
    """The sidecar's ``uncertainty`` entry: units, whole-volume means, and per foreground label the mean
    entropy (and mutual information) inside the predicted structure and in its boundary band."""
    boxes = ndimage.find_objects(labels) if labels.any() else []
    volume = {"entropy_mean": _mean(maps.entropy)}
    if maps.mutual_information is not None:
        volume["mutual_information_mean"] = _mean(maps.mutual_information)
    per_label = {name: _structure_summary(labels, value, boxes[value - 1] if value - 1 < len(boxes) else None, maps)
                 for value, name in sorted(names.items()) if value != 0}
    return {
        "entropy": ENTROPY_UNITS,
        "mutual_information": MI_UNITS if maps.mutual_information is not None else None,  # one member: nothing to disagree
        "members": maps.members,
        "classes": maps.classes,
        "boundary_band": BAND_RULE,
        "volume": volume,
        "labels": per_label,
    }
