"""Voxel-overlap metrics: TP/FP/FN counts, Dice, IoU and volumes in mL.

Empty conventions (stated in summary.json too): when prediction and reference are both empty,
Dice = IoU = 1 (nothing to find, nothing found; MONAI ``DiceMetric(ignore_empty=False)`` does the
same); when exactly one is empty, Dice = IoU = 0. The relative volume error is NaN when the
reference is empty, because it would divide by zero.
"""

from __future__ import annotations

import numpy as np


def overlap_counts(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int, int]:
    """(TP, FP, FN) voxel counts of two boolean masks."""
    tp = int(np.count_nonzero(pred & ref))
    return tp, int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(ref)) - tp


def overlap_metrics(tp: int, fp: int, fn: int, voxel_ml: float) -> dict[str, float]:
    """Dice, IoU, volumes (mL) and volume errors from voxel counts."""
    pred_voxels, ref_voxels = tp + fp, tp + fn
    if pred_voxels + ref_voxels == 0:
        dice = iou = 1.0
    else:
        dice = 2.0 * tp / (pred_voxels + ref_voxels)
        iou = tp / (tp + fp + fn)
    volume_pred, volume_ref = pred_voxels * voxel_ml, ref_voxels * voxel_ml
    difference = volume_pred - volume_ref
    return {
        "dice": dice,
        "iou": iou,
        "volume_pred_ml": volume_pred,
        "volume_ref_ml": volume_ref,
        "volume_diff_ml": difference,
        "abs_volume_error_ml": abs(difference),
        "rel_volume_error": difference / volume_ref if ref_voxels else np.nan,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def voxel_volume_ml(affine: np.ndarray) -> float:
    """Volume of one voxel in mL (1 mL = 1000 mm^3); the determinant handles oblique grids."""
    return float(abs(np.linalg.det(np.asarray(affine, dtype=float)[:3, :3]))) / 1000.0
