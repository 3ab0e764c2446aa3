"""Boundary metrics (HD, HD95, ASSD, NSD) with exactly MONAI's semantics, computed fast on a crop.

Semantics (checked against MONAI 1.6.1 ``monai/metrics/utils.py``, ``hausdorff_distance.py``,
``surface_distance.py``, ``surface_dice.py``; tests/metrics/test_monai_agreement.py holds us to 1e-6):

* **Surface voxels** ("edges") are the mask voxels removed by one binary erosion with the
  6-connected cross, treating everything outside the image as background. That is what MONAI's
  ``get_mask_edges(crop=True)`` does: it crops to the union bounding box with a 1-voxel zero margin
  and XORs the mask with ``scipy.ndimage.binary_erosion`` of it. We do the same erosion with six
  shifted ANDs (identical result, ~2x faster than binary_erosion); voxels on the array border
  are always surface, exactly as with the zero margin.
* **Surface distance** of a voxel on one surface = Euclidean distance in mm (voxel index times
  spacing) to the nearest surface voxel of the other mask. MONAI computes it on CPU with a KD-tree
  over the scaled surface coordinates; so do we (:class:`scipy.spatial.cKDTree`). We measured it
  10x faster than ``scipy.ndimage.distance_transform_edt(sampling=spacing)`` over the union
  bounding box on a 2.7 L organ at 0.8x0.8x1.5 mm (0.14 s vs 1.55 s; both exact, they agree to
  3e-14 mm), because it touches only surface voxels, not the whole box.
* **HD95** = max over the two directions of the 95th percentile (linear interpolation, as
  ``torch.quantile`` / ``numpy.percentile``) of that direction's surface distances. **HD** uses
  the maximum instead of the percentile.
* **ASSD** = mean of the *concatenated* distances of both directions (MONAI's
  ``SurfaceDistanceMetric(symmetric=True)``), i.e. surface-size weighted, not the mean of the two
  directed means.
* **NSD** at tolerance tau = (number of surface voxels of both masks whose distance is <= tau) /
  (total number of surface voxels of both masks): MONAI's ``SurfaceDiceMetric`` with
  ``use_subvoxels=False`` (boundary size = count of edge voxels, not DeepMind's surfel areas).

Intended differences from MONAI, all about empty masks (MONAI returns inf/NaN there):

* both masks empty: HD, HD95, ASSD and NSD are NaN (as MONAI), flagged ``empty='both'``;
* exactly one empty: HD, HD95, ASSD = a cap (default: the image diagonal in mm, the largest
  distance the grid can hold; see ``EvaluateConfig.empty_distance``) instead of MONAI's inf,
  and NSD = 0 (MONAI also gives 0), flagged ``empty='pred'`` or ``empty='ref'``.

We keep distances in float64; MONAI rounds them to float32, which is the only source of
differences: below 1e-6 (relative) for Dice, HD, ASSD, NSD and the surface distances themselves.
MONAI's HD95 additionally goes through ``torch.quantile`` in float32, whose interpolation position
is rounded, so it can be up to a few 1e-6 relative off ours; the 95th percentile of MONAI's own
edge distances taken in float64 agrees with ours to 1e-7. The NSD comparison ``d <= tau`` allows 1e-9 mm
slack so an exact tie (distance == tau up to float rounding) counts as inside, as it does in
MONAI after its float32 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

# Slack for d <= tau comparisons: distances that equal tau up to float64 rounding count as inside.
_TIE_SLACK_MM = 1e-9


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Mask voxels with at least one 6-neighbour outside the mask (outside the array counts as outside)."""
    mask = np.asarray(mask, dtype=bool)
    interior = np.zeros_like(mask)
    if min(mask.shape) < 3:  # every voxel touches the array border
        return mask.copy()
    inner = (slice(1, -1),) * mask.ndim
    core = mask[inner].copy()
    for axis in range(mask.ndim):
        for shifted in (slice(0, -2), slice(2, None)):
            view = list(inner)
            view[axis] = shifted
            core &= mask[tuple(view)]
    interior[inner] = core
    return mask & ~interior


def _sparse_surface_indices(mask: np.ndarray) -> tuple[np.ndarray, ...]:
    """Indices of surface voxels by checking only the mask voxels' 6 neighbours: O(mask voxels)."""
    mask = np.ascontiguousarray(mask)
    flat_mask = mask.ravel()
    flat = np.flatnonzero(flat_mask)
    coordinates = np.unravel_index(flat, mask.shape)
    strides = np.cumprod((mask.shape[1:] + (1,))[::-1])[::-1]
    interior = np.ones(flat.size, dtype=bool)
    for axis, (coordinate, stride) in enumerate(zip(coordinates, strides)):
        for step in (-1, 1):
            inside = (coordinate + step >= 0) & (coordinate + step < mask.shape[axis])
            neighbour = np.zeros(flat.size, dtype=bool)
            neighbour[inside] = flat_mask[flat[inside] + step * stride]
            interior &= neighbour
    return tuple(coordinate[~interior] for coordinate in coordinates)


def surface_points(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """(N, ndim) mm coordinates (index x spacing) of the surface voxels of ``mask``."""
    mask = np.asarray(mask, dtype=bool)
    if np.count_nonzero(mask) * 5 < mask.size:  # sparse in its box (e.g. scattered false positives)
        indices = _sparse_surface_indices(mask)
    else:  # flatnonzero + unravel_index is ~7x faster than argwhere on large boolean arrays
        indices = np.unravel_index(np.flatnonzero(surface_voxels(mask)), mask.shape)
    return np.stack(indices, axis=1).astype(np.float64) * np.asarray(spacing, dtype=np.float64)[None, :]


def directed_distances(from_points: np.ndarray, to_points: np.ndarray) -> np.ndarray:
    """Distance (mm) from each point of ``from_points`` to its nearest point of ``to_points``."""
    if len(from_points) == 0:
        return np.zeros(0)
    if len(to_points) == 0:
        return np.full(len(from_points), np.inf)
    # leafsize 32 as in MONAI: one batched query per tree, so a shallower tree is faster.
    return cKDTree(to_points, leafsize=32).query(from_points, k=1)[0]


@dataclass
class SurfaceDistances:
    """Both directed surface-distance sets of one prediction/reference pair (mm)."""

    pred_to_ref: np.ndarray
    ref_to_pred: np.ndarray

    @property
    def empty(self) -> str:
        """'' when both surfaces exist, else 'both', 'pred' or 'ref' (which one is empty)."""
        pred_empty, ref_empty = len(self.pred_to_ref) == 0, len(self.ref_to_pred) == 0
        if pred_empty and ref_empty:
            return "both"
        return "pred" if pred_empty else "ref" if ref_empty else ""


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing) -> SurfaceDistances:
    """Surface distances between two boolean masks on the same grid.

    Pass masks already cropped to their union bounding box (any margin): surface voxels and
    distances do not depend on the crop, since outside the array counts as background.
    """
    spacing = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if spacing.size != pred.ndim:
        raise ValueError(f"spacing has {spacing.size} values for a {pred.ndim}D mask")
    pred_points, ref_points = surface_points(pred, spacing), surface_points(ref, spacing)
    return SurfaceDistances(directed_distances(pred_points, ref_points), directed_distances(ref_points, pred_points))


def boundary_metrics(distances: SurfaceDistances, tolerance_mm: float, empty_cap_mm: float = np.nan, percentile: float = 95.0) -> dict[str, float]:
    """HD, HD95, ASSD and NSD from surface distances, with the documented empty-mask conventions."""
    empty = distances.empty
    if empty == "both":
        return {"hd": np.nan, "hd95": np.nan, "assd": np.nan, "nsd": np.nan}
    if empty:
        return {"hd": empty_cap_mm, "hd95": empty_cap_mm, "assd": empty_cap_mm, "nsd": 0.0}
    a, b = distances.pred_to_ref, distances.ref_to_pred
    inside = int(np.count_nonzero(a <= tolerance_mm + _TIE_SLACK_MM)) + int(np.count_nonzero(b <= tolerance_mm + _TIE_SLACK_MM))
    return {
        "hd": float(max(a.max(), b.max())),
        "hd95": float(max(np.percentile(a, percentile), np.percentile(b, percentile))),
        "assd": float((a.sum() + b.sum()) / (a.size + b.size)),
        "nsd": inside / (a.size + b.size),
    }


def image_diagonal_mm(shape, spacing) -> float:
    """Length (mm) of the grid's diagonal: no surface distance inside the image can exceed it."""
    return float(np.linalg.norm(np.asarray(shape, dtype=float) * np.asarray(spacing, dtype=float)))
