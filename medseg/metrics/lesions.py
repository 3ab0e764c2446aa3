"""Lesion-wise detection: connected components, matching rule, per-lesion and per-case scores.

Matching rule (configurable through :class:`~medseg.metrics.config.EvaluateConfig`):

* lesions are 3D connected components (26-connectivity by default) of the label's mask;
  components smaller than ``lesion_min_voxels`` are ignored in both maps;
* a predicted component **hits** a reference lesion when they share at least
  ``lesion_min_overlap_voxels`` voxels (after dilating the reference lesion by
  ``lesion_match_dilation_voxels``, 0 by default; BraTS 2023 uses 3);
* a reference lesion is **detected** (TP) when it has at least one hit and, if
  ``lesion_iou_threshold`` > 0, IoU(lesion, union of its hitting components) reaches the threshold;
  otherwise it is missed (FN);
* **split**: several predicted components on one reference lesion -> one TP, all of them matched;
  **merged**: one predicted component covering two reference lesions -> both TP;
* a predicted component that is not a hit of any detected lesion is a false positive (FP).

Per reference lesion, Dice is computed against the union of its hitting components (0 if none).
Per case: sensitivity = detected / reference lesions, precision = matched predicted components /
predicted components, F1 = their harmonic mean (NaN when undefined, e.g. no lesion in either map);
BraTS-2023 lesion-wise Dice = sum of detected lesions' Dice / (reference lesions + FP components),
1.0 when both maps have no lesion.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from medseg.io.volume import Volume
from medseg.metrics.config import EvaluateConfig
from medseg.metrics.diameters import axial_diameters


@dataclass
class Component:
    """One connected component: 1-based id, its voxels and where it lies in the analysed crop."""

    id: int
    voxels: int
    box: tuple[slice, ...]
    hits: list[int] = field(default_factory=list)  # ids of components of the other map it matches
    dice: float = np.nan
    detected: bool = False


def structure_for(connectivity: int) -> np.ndarray:
    """3x3x3 structuring element for 6-, 18- or 26-connectivity."""
    return ndimage.generate_binary_structure(3, {6: 1, 18: 2, 26: 3}[connectivity])


def components(mask: np.ndarray, connectivity: int = 26, min_voxels: int = 1) -> tuple[np.ndarray, list[Component]]:
    """Label connected components; drop those under ``min_voxels`` and renumber the rest 1..n."""
    structure = structure_for(connectivity)
    try:  # uint16 labels halve memory and time on full-size volumes; few cases need more
        labelled = np.zeros(mask.shape, np.uint16)
        count = ndimage.label(mask, structure=structure, output=labelled)
    except RuntimeError:
        labelled, count = ndimage.label(mask, structure=structure)
    if count == 0:
        return labelled, []
    boxes = ndimage.find_objects(labelled, max_label=count)
    # Counting inside each box is much faster than a bincount over the whole array.
    sizes = [int(np.count_nonzero(labelled[box] == i + 1)) for i, box in enumerate(boxes)]
    keep = [i for i, size in enumerate(sizes) if size >= min_voxels]
    if len(keep) < count:
        remap = np.zeros(count + 1, dtype=labelled.dtype)
        remap[np.array(keep, dtype=int) + 1] = np.arange(1, len(keep) + 1)
        labelled = remap[labelled]
    return labelled, [Component(n + 1, sizes[i], boxes[i]) for n, i in enumerate(keep)]


def _overlaps(ref_labels: np.ndarray, pred_labels: np.ndarray) -> dict[tuple[int, int], int]:
    """{(ref id, pred id): shared voxels} for every overlapping pair."""
    both = (ref_labels > 0) & (pred_labels > 0)
    if not both.any():
        return {}
    pairs, counts = np.unique(np.stack([ref_labels[both], pred_labels[both]]), axis=1, return_counts=True)
    return {(int(r), int(p)): int(c) for (r, p), c in zip(pairs.T, counts)}


def _dilated_hits(ref_labels: np.ndarray, ref: list[Component], pred_labels: np.ndarray, config: EvaluateConfig) -> dict[tuple[int, int], int]:
    """Like :func:`_overlaps`, but each reference lesion is first dilated by the configured margin."""
    hits: dict[tuple[int, int], int] = {}
    margin = config.lesion_match_dilation_voxels
    structure = structure_for(config.connectivity)
    for lesion in ref:
        box = tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(lesion.box, ref_labels.shape))
        grown = ndimage.binary_dilation(ref_labels[box] == lesion.id, structure=structure, iterations=margin)
        ids, counts = np.unique(pred_labels[box][grown], return_counts=True)
        hits.update({(lesion.id, int(p)): int(c) for p, c in zip(ids, counts) if p > 0})
    return hits


@dataclass
class LesionMatch:
    """Matched components of both maps (with their label images) and the case's detection scores."""

    ref_labels: np.ndarray
    ref: list[Component]
    pred_labels: np.ndarray
    pred: list[Component]
    scores: dict[str, float]


def match_lesions(ref_mask: np.ndarray, pred_mask: np.ndarray, config: EvaluateConfig) -> LesionMatch:
    """Match reference lesions to predicted components following the module's rule."""
    ref_labels, ref = components(ref_mask, config.connectivity, config.lesion_min_voxels)
    pred_labels, pred = components(pred_mask, config.connectivity, config.lesion_min_voxels)
    overlap, hits = lesion_overlaps(ref_labels, ref, pred_labels, config)
    assign_matches(ref, pred, overlap, hits, config)
    return LesionMatch(ref_labels, ref, pred_labels, pred, case_scores(ref, pred))


def lesion_overlaps(ref_labels: np.ndarray, ref: list[Component], pred_labels: np.ndarray,
                    config: EvaluateConfig) -> tuple[dict[tuple[int, int], int], dict[tuple[int, int], int]]:
    """``(overlap, hits)``: {(ref id, pred id): voxels} shared undilated, and shared with the reference lesion dilated
    by the configured margin (the same dict when there is none). Independent of which predictions are kept, so
    :mod:`medseg.metrics.detection` computes them once and applies :func:`assign_matches` per confidence threshold."""
    overlap = _overlaps(ref_labels, pred_labels)
    hits = overlap if config.lesion_match_dilation_voxels == 0 else _dilated_hits(ref_labels, ref, pred_labels, config)
    return overlap, hits


def assign_matches(ref: list[Component], pred: list[Component], overlap: dict[tuple[int, int], int],
                   hits: dict[tuple[int, int], int], config: EvaluateConfig) -> None:
    """The matching rule of the module docstring, on fresh components: sets ``hits``, ``dice`` and ``detected`` of
    both lists in place. Pairs naming a predicted component not in ``pred`` are left out."""
    pred_by_id = {component.id: component for component in pred}
    hits_of: dict[int, list[int]] = {}
    for (r, p), count in sorted(hits.items()):
        if count >= config.lesion_min_overlap_voxels and p in pred_by_id:
            hits_of.setdefault(r, []).append(p)
    for lesion in ref:
        lesion.hits = hits_of.get(lesion.id, [])
        union = sum(pred_by_id[p].voxels for p in lesion.hits)
        shared = sum(overlap.get((lesion.id, p), 0) for p in lesion.hits)
        lesion.dice = 2.0 * shared / (lesion.voxels + union)
        iou = shared / (lesion.voxels + union - shared)
        lesion.detected = bool(lesion.hits) and iou >= config.lesion_iou_threshold
        if lesion.detected:
            for p in lesion.hits:
                pred_by_id[p].hits.append(lesion.id)
                pred_by_id[p].detected = True


def case_scores(ref: list[Component], pred: list[Component]) -> dict[str, float]:
    """Per-case detection counts and rates from matched components."""
    tp = sum(lesion.detected for lesion in ref)
    fn = len(ref) - tp
    matched_pred = sum(component.detected for component in pred)
    fp = len(pred) - matched_pred
    sensitivity = tp / len(ref) if ref else np.nan
    precision = matched_pred / len(pred) if pred else np.nan
    if np.isnan(sensitivity) or np.isnan(precision):
        f1 = 0.0 if (ref or pred) else np.nan  # one side empty: nothing right; both: undefined
    else:
        f1 = 2 * sensitivity * precision / (sensitivity + precision) if sensitivity + precision > 0 else 0.0
    denominator = len(ref) + fp
    lesion_dice = sum(lesion.dice for lesion in ref if lesion.detected) / denominator if denominator else 1.0
    return {
        "lesions_ref": len(ref),
        "lesions_pred": len(pred),
        "lesion_tp": tp,
        "lesion_fn": fn,
        "lesion_fp": fp,
        "lesion_sensitivity": sensitivity,
        "lesion_precision": precision,
        "lesion_f1": f1,
        "lesion_dice": lesion_dice,
    }


def describe_component(labels: np.ndarray, component: Component, affine: np.ndarray, voxel_ml: float) -> dict[str, float | int]:
    """Volume, world centroid and RECIST diameters of one component.

    ``affine`` maps ``labels``' indices to world RAS mm, in any axis order: the component's box is
    reoriented to RAS on its own (cheap, and lossless) so diameters are measured in axial slices.
    ``axial_z_mm`` is the world z of the slice where the long axis was measured.
    """
    mask = labels[component.box] == component.id
    offset = np.array([s.start for s in component.box], dtype=float)
    box_affine = np.array(affine, dtype=float)
    box_affine[:3, 3] = box_affine[:3, :3] @ offset + box_affine[:3, 3]
    centroid = box_affine[:3, :3] @ np.argwhere(mask).mean(axis=0) + box_affine[:3, 3]
    ras = Volume(mask.view(np.uint8), box_affine, "label").reoriented("RAS")
    diameters = axial_diameters(ras.array.astype(bool), ras.affine)
    slice_index = diameters.pop("axial_slice")
    return {
        "voxels": component.voxels,
        "volume_ml": component.voxels * voxel_ml,
        "centroid_x_mm": float(centroid[0]),
        "centroid_y_mm": float(centroid[1]),
        "centroid_z_mm": float(centroid[2]),
        # world z of the slice's centre voxel (exact for axial slices; the slice mean for tilted ones)
        "axial_z_mm": float(ras.affine[2, :3] @ np.array([(ras.shape[0] - 1) / 2, (ras.shape[1] - 1) / 2, slice_index]) + ras.affine[2, 3]),
        **diameters,
    }
