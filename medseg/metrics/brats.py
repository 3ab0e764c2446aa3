"""BraTS 2023 lesion-wise Dice and HD95, the challenge's ranking metrics, for one binary region mask.

The rules, as the published BraTS 2023 evaluation defines them (Saluja et al.,
github.com/rachitsaluja/BraTS-2023-Metrics; implemented here from its description, not copied):

1. **Reference lesions** are 26-connected components of the reference mask, except that
   components close to each other count as one lesion: the whole reference mask is dilated
   ``dilation`` times with the 18-connected 3x3x3 element (``generate_binary_structure(3, 2)``),
   and reference components inside one connected component of the dilated mask are one lesion.
   The reference voxels themselves do not change.
2. **Predicted components** are the 26-connected components of the prediction (no size limit).
3. For each reference lesion, the lesion alone is dilated the same way; every predicted component
   touching the dilated lesion is matched to it, and their union (whole components, also the parts
   outside the dilated lesion) is compared with the lesion: Dice, and HD95 between the two
   (``missing_hd95_mm``, 374 mm, when no component matched). A component may match several lesions.
4. Predicted components matched to no lesion are **false positives**: Dice 0, HD95 374 mm each.
5. Reference lesions of at most ``min_volume_mm3`` (50 mm^3 for glioma; volume = voxels x voxel
   volume) are left out of the scores and of the TP/FN counts; components matching them are not
   false positives.
6. Per case: lesion-wise Dice = sum of the counted lesions' Dice / (counted lesions + FP); lesion-wise
   HD95 = (sum of their HD95 + 374 x FP) / (counted lesions + FP). With nothing to count (no lesion
   and no FP, e.g. both masks empty) Dice is 1 and HD95 0.

One documented difference: HD95 here is medseg's (MONAI's) 95th percentile of distances between
surface voxels (:mod:`medseg.metrics.surface`); the BraTS code uses DeepMind's surface-distance
package, which weights distances by surfel area. Both are 0 for a perfect match and agree closely
on lesions of a few voxels and up; the matching, counting and penalties above are exactly BraTS'.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from medseg.metrics.labels import find_spec
from medseg.metrics.surface import boundary_metrics, surface_distances

CONNECTIVITY_26 = ndimage.generate_binary_structure(3, 3)
DILATION_18 = ndimage.generate_binary_structure(3, 2)
MISSING_HD95_MM = 374.0  # the BraTS penalty: about the diagonal of its 240 x 240 x 155 mm grid


@dataclass
class BratsLesion:
    """One reference lesion (after merging by dilation) and how it was predicted."""

    id: int
    voxels: int
    volume_mm3: float
    counted: bool  # above the volume threshold: part of the scores
    matched: list[int] = field(default_factory=list)  # predicted component ids
    dice: float = 0.0
    hd95: float = MISSING_HD95_MM


@dataclass
class BratsResult:
    lesions: list[BratsLesion]
    false_positives: list[tuple[int, int]]  # (predicted component id, voxels)
    components: int  # predicted components in all
    dice: float
    hd95: float

    @property
    def tp(self) -> int:
        return sum(lesion.counted and bool(lesion.matched) for lesion in self.lesions)

    @property
    def fn(self) -> int:
        return sum(lesion.counted and not lesion.matched for lesion in self.lesions)

    @property
    def fp(self) -> int:
        return len(self.false_positives)

    def scores(self) -> dict[str, float | int]:
        return {"brats_lesion_dice": self.dice, "brats_lesion_hd95": self.hd95, "brats_tp": self.tp, "brats_fp": self.fp, "brats_fn": self.fn}


def _dilate(mask: np.ndarray, iterations: int) -> np.ndarray:
    return ndimage.binary_dilation(mask, structure=DILATION_18, iterations=iterations) if iterations > 0 else mask


def reference_lesions(ref: np.ndarray, dilation: int) -> tuple[np.ndarray, int]:
    """Reference voxels labelled by lesion (components joined within the dilation distance), and their count."""
    grown, count = ndimage.label(_dilate(ref, dilation), structure=CONNECTIVITY_26)
    return np.where(ref, grown, 0), count


def _grow_box(box: tuple[slice, ...], margin: int, shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(box, shape))


def _union_box(boxes: list[tuple[slice, ...]]) -> tuple[slice, ...]:
    return tuple(slice(min(b[d].start for b in boxes), max(b[d].stop for b in boxes)) for d in range(3))


def _score_lesion(lesion: np.ndarray, box, pred_labels: np.ndarray, pred_boxes, dilation: int, spacing, missing_hd95: float):
    """(matched component ids, Dice, HD95) of one reference lesion ``lesion`` (a mask inside ``box``)."""
    grown_box = _grow_box(box, dilation, pred_labels.shape)
    inner = tuple(slice(b.start - g.start, b.stop - g.start) for b, g in zip(box, grown_box))
    local = np.zeros(tuple(s.stop - s.start for s in grown_box), bool)
    local[inner] = lesion
    touched = np.unique(pred_labels[grown_box][_dilate(local, dilation)])
    matched = [int(i) for i in touched if i > 0]
    if not matched:
        return matched, 0.0, missing_hd95
    box_all = _union_box([box] + [pred_boxes[i - 1] for i in matched])
    ref_crop = np.zeros(tuple(s.stop - s.start for s in box_all), bool)
    ref_crop[tuple(slice(b.start - a.start, b.stop - a.start) for b, a in zip(box, box_all))] = lesion
    pred_crop = np.isin(pred_labels[box_all], matched)
    shared = int(np.count_nonzero(ref_crop & pred_crop))
    dice = 2.0 * shared / (int(ref_crop.sum()) + int(pred_crop.sum()))
    hd95 = boundary_metrics(surface_distances(pred_crop, ref_crop, spacing), 0.0, missing_hd95)["hd95"]
    return matched, dice, float(hd95)


def brats_lesionwise(pred: np.ndarray, ref: np.ndarray, spacing, dilation: int = 3, min_volume_mm3: float = 50.0,
                     missing_hd95_mm: float = MISSING_HD95_MM) -> BratsResult:
    """BraTS 2023 lesion-wise scores of a binary prediction against a binary reference (see the module docstring)."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    voxel_mm3 = float(np.prod(np.asarray(spacing, dtype=float)))
    lesion_labels, count = reference_lesions(ref, dilation)
    pred_labels, components = ndimage.label(pred, structure=CONNECTIVITY_26)
    pred_boxes = ndimage.find_objects(pred_labels) if components else []
    lesions, used = [], set()
    for index, box in enumerate(ndimage.find_objects(lesion_labels, max_label=count) if count else []):
        if box is None:
            continue
        mask = lesion_labels[box] == index + 1
        voxels = int(mask.sum())
        matched, dice, hd95 = _score_lesion(mask, box, pred_labels, pred_boxes, dilation, spacing, missing_hd95_mm)
        used.update(matched)
        lesions.append(BratsLesion(len(lesions) + 1, voxels, voxels * voxel_mm3, voxels * voxel_mm3 > min_volume_mm3, matched, dice, hd95))
    false_positives = [(i + 1, int(np.count_nonzero(pred_labels[b] == i + 1))) for i, b in enumerate(pred_boxes) if i + 1 not in used]
    counted = [lesion for lesion in lesions if lesion.counted]
    denominator = len(counted) + len(false_positives)
    dice = sum(lesion.dice for lesion in counted) / denominator if denominator else 1.0
    hd95 = (sum(lesion.hd95 for lesion in counted) + missing_hd95_mm * len(false_positives)) / denominator if denominator else 0.0
    return BratsResult(lesions, false_positives, components, float(dice), float(hd95))


BRATS_LESION_COLUMNS = ["case", "label", "kind", "lesion", "voxels", "volume_mm3", "counted", "matched", "dice", "hd95"]
BRATS_CASE_COLUMNS = ["brats_lesion_dice", "brats_lesion_hd95", "brats_tp", "brats_fp", "brats_fn"]


def lesion_rows(result: BratsResult, case_id: str, label: str, voxel_mm3: float, missing_hd95_mm: float) -> list[dict]:
    """brats_lesions.csv rows: every reference lesion (matched or missed) and every false positive."""
    rows = [{"case": case_id, "label": label, "kind": "reference", "lesion": lesion.id, "voxels": lesion.voxels,
             "volume_mm3": lesion.volume_mm3, "counted": lesion.counted, "matched": ";".join(str(i) for i in lesion.matched),
             "dice": lesion.dice, "hd95": lesion.hd95} for lesion in result.lesions]
    rows += [{"case": case_id, "label": label, "kind": "false positive", "lesion": component, "voxels": voxels,
              "volume_mm3": voxels * voxel_mm3, "counted": True, "matched": "", "dice": 0.0, "hd95": missing_hd95_mm}
             for component, voxels in result.false_positives]
    return rows


def evaluate_brats(pred, ref, specs, config, case_id: str) -> tuple[dict[str, dict], list[dict]]:
    """BraTS lesion-wise scores of each spec (a label or region of two label-map Volumes on one grid).

    Returns ({label name: case scores}, brats_lesions.csv rows). Each region is analysed inside the
    union box of both masks, grown by the dilation, which holds every component and dilation.
    """
    spacing = pred.spacing
    voxel_mm3 = float(np.prod(spacing))
    scores, rows = {}, []
    for spec in specs:
        threshold = next((value for key, value in config.brats_label_min_volume_mm3.items() if find_spec([spec], key) is not None),
                         config.brats_min_volume_mm3)
        ref_mask, pred_mask = np.isin(ref.array, spec.values), np.isin(pred.array, spec.values)
        found = ndimage.find_objects((ref_mask | pred_mask).view(np.uint8))
        if not found:
            scores[spec.name] = BratsResult([], [], 0, 1.0, 0.0).scores() | {"brats_min_volume_mm3": threshold}
            continue
        box = _grow_box(found[0], config.brats_dilation + 1, ref_mask.shape)
        result = brats_lesionwise(pred_mask[box], ref_mask[box], spacing, config.brats_dilation, threshold, config.brats_missing_hd95_mm)
        scores[spec.name] = result.scores() | {"brats_min_volume_mm3": threshold}
        rows += lesion_rows(result, case_id, spec.name, voxel_mm3, config.brats_missing_hd95_mm)
    return scores, rows
