"""Lesion detection with confidences: FROC and average precision from `medseg infer --instances` outputs.

Inputs per case: the reference label map, the instance map ``<case>_instances.nii.gz`` and its records
``<case>_lesions.json`` (each instance id with its label and confidence) beside the prediction.

**Matching** is the one rule of :mod:`medseg.metrics.lesions` (components of the reference with
``lesion_min_voxels``, hits by ``lesion_min_overlap_voxels`` after ``lesion_match_dilation_voxels``, the
IoU threshold, splits and merges): the threshold-free overlaps are computed once per case
(:func:`~medseg.metrics.lesions.lesion_overlaps`) and :func:`~medseg.metrics.lesions.assign_matches` is
applied to the predicted lesions whose confidence reaches each threshold. The predicted lesions are the
instances (not the components of the mask, which they equal unless a split was made); instances smaller
than ``lesion_min_voxels`` are ignored, as components are.

At a threshold ``t`` (every distinct confidence, highest first), pooled over cases:

* **sensitivity** = detected reference lesions / reference lesions;
* **false positives** = kept predicted lesions that hit no detected reference lesion; divided by the
  number of evaluated cases (all of them, lesion-free ones included) for the FROC's x axis;
* **precision** = kept predicted lesions that are matched / kept predicted lesions. Under the rule a
  second prediction on the same lesion (a split) is matched, not a false positive (LUNA16 ignores such
  duplicates too; COCO-style AP would count them as FPs).

**FROC**: sensitivity against mean FPs per case, from the point (0, 0) (nothing kept). Where several
thresholds give the same FP rate the best sensitivity counts; between operating points the curve is
linear (a random mix of two thresholds reaches every point in between, the LUNA16 evaluation's
``np.interp``); beyond the lowest threshold it stays flat (no more FPs can be had).
**Sensitivity at 1/8 ... 8 FPs per case** is read off that curve, and the **CPM** (competition
performance metric, LUNA16) is their mean. **AP** = sum over thresholds of (recall gain) x precision
(the step integral, as ``sklearn.metrics.average_precision_score``), so lesions never predicted cap
recall below 1 and cost AP. With the default rule (no IoU threshold) sensitivity and FPs only grow as
the threshold falls; an IoU threshold can make them fall (a new hitting prediction lowers the IoU).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.errors import InputError
from medseg.metrics.config import EvaluateConfig
from medseg.metrics.labels import LabelSpec
from medseg.metrics.lesions import Component, assign_matches, components, lesion_overlaps

log = logging.getLogger(__name__)

#: LUNA16's operating points (mean false positives per case) for the sensitivities and the CPM.
FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
DETECTION_COLUMNS = ["case", "label", "lesion", "confidence", "voxels", "matched", "hits"]


@dataclass
class CaseDetections:
    """One case and one lesion label: reference lesions, scored predicted lesions and their overlaps."""

    case: str
    ref: list[Component]
    pred: list[Component]
    confidence: dict[int, float]  # predicted lesion id -> confidence
    overlap: dict[tuple[int, int], int] = field(default_factory=dict)
    hits: dict[tuple[int, int], int] = field(default_factory=dict)


def _instance_components(instances: np.ndarray, ids: Iterable[int], min_voxels: int) -> list[Component]:
    """Components of the instance ids present in ``instances`` (already restricted to ``ids``)."""
    boxes = ndimage.find_objects(instances)
    found = []
    for identifier in sorted(ids):
        box = boxes[identifier - 1] if 0 < identifier <= len(boxes) else None
        if box is None:
            continue
        voxels = int(np.count_nonzero(instances[box] == identifier))
        if voxels >= min_voxels:
            found.append(Component(identifier, voxels, box))
    return found


def case_detections(case: str, ref_mask: np.ndarray, instances: np.ndarray, confidence: dict[int, float], config: EvaluateConfig) -> CaseDetections:
    """Reference lesions of ``ref_mask``, the instances of ``confidence``'s ids in ``instances`` and their overlaps."""
    if ref_mask.shape != instances.shape:
        raise ValueError(f"reference {ref_mask.shape} and instance map {instances.shape} differ in shape")
    kept = np.isin(instances, np.fromiter(confidence, dtype=np.int64)) if confidence else np.zeros(instances.shape, bool)
    pred_labels = np.where(kept, instances, 0).astype(np.int64 if instances.max(initial=0) > 65535 else np.uint16)
    ref_labels, ref = components(ref_mask, config.connectivity, config.lesion_min_voxels)
    pred = _instance_components(pred_labels, confidence, config.lesion_min_voxels)
    overlap, hits = lesion_overlaps(ref_labels, ref, pred_labels, config)
    return CaseDetections(case, ref, pred, {c.id: float(confidence[c.id]) for c in pred}, overlap, hits)


def counts_at(case: CaseDetections, threshold: float, config: EvaluateConfig) -> tuple[int, int, int]:
    """(detected reference lesions, matched predicted lesions, predicted lesions) keeping confidences >= ``threshold``."""
    ref = [replace(lesion, hits=[], detected=False, dice=np.nan) for lesion in case.ref]
    pred = [replace(c, hits=[], detected=False) for c in case.pred if case.confidence[c.id] >= threshold]
    assign_matches(ref, pred, case.overlap, case.hits, config)
    return sum(lesion.detected for lesion in ref), sum(c.detected for c in pred), len(pred)


@dataclass
class DetectionCurve:
    """Pooled counts per threshold (descending); ``lesions`` reference lesions over ``cases`` cases."""

    thresholds: np.ndarray
    detected: np.ndarray
    matched: np.ndarray
    predicted: np.ndarray
    lesions: int
    cases: int

    @property
    def false_positives(self) -> np.ndarray:
        return self.predicted - self.matched

    @property
    def sensitivity(self) -> np.ndarray:
        return self.detected / self.lesions if self.lesions else np.full(len(self.thresholds), np.nan)

    @property
    def fp_per_case(self) -> np.ndarray:
        return self.false_positives / max(self.cases, 1)

    @property
    def precision(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.predicted > 0, self.matched / np.maximum(self.predicted, 1), np.nan)


def detection_curve(cases: Sequence[CaseDetections], config: EvaluateConfig) -> DetectionCurve:
    """Counts at every distinct confidence; a case is re-matched only at the thresholds where it gains a lesion."""
    thresholds = sorted({value for case in cases for value in case.confidence.values()}, reverse=True)
    current = [(0, 0, 0)] * len(cases)
    by_threshold: dict[float, list[int]] = {}
    for index, case in enumerate(cases):
        for value in set(case.confidence.values()):
            by_threshold.setdefault(value, []).append(index)
    rows = []
    for threshold in thresholds:
        for index in by_threshold[threshold]:
            current[index] = counts_at(cases[index], threshold, config)
        rows.append(np.sum(current, axis=0) if current else np.zeros(3, int))
    counts = np.array(rows, dtype=np.int64).reshape(-1, 3)
    return DetectionCurve(np.array(thresholds, dtype=float), counts[:, 0], counts[:, 1], counts[:, 2],
                          sum(len(case.ref) for case in cases), len(cases))


def froc_points(fp_per_case: np.ndarray, sensitivity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The FROC's vertices, by FP rate: (0, 0) (nothing kept) and each distinct FP rate with the best sensitivity
    reached at that rate or below (the same as at that rate whenever sensitivity only grows, the default rule)."""
    rates = np.concatenate([[0.0], np.asarray(fp_per_case, dtype=float)])
    values = np.concatenate([[0.0], np.nan_to_num(np.asarray(sensitivity, dtype=float))])
    distinct = np.unique(rates)
    best = np.array([values[rates == rate].max() for rate in distinct])
    return distinct, np.maximum.accumulate(best)


def sensitivity_at(fp_per_case: np.ndarray, sensitivity: np.ndarray, rates: Sequence[float] = FP_RATES) -> np.ndarray:
    """Sensitivity at each FP rate on the FROC: linear between vertices, flat after the last (LUNA16's reading).
    NaN when sensitivity is undefined (no reference lesion); 0 everywhere when nothing was predicted."""
    sensitivity = np.asarray(sensitivity, dtype=float)
    if len(sensitivity) and np.isnan(sensitivity).all():
        return np.full(len(rates), np.nan)
    x, y = froc_points(fp_per_case, sensitivity)
    return np.interp(np.asarray(rates, dtype=float), x, y)


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Sum of (recall_n - recall_{n-1}) * precision_n over thresholds in descending order, recall_0 = 0."""
    recall, precision = np.asarray(recall, dtype=float), np.asarray(precision, dtype=float)
    if not len(recall):
        return 0.0
    if np.isnan(recall).all():
        return float("nan")
    gains = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(gains * np.nan_to_num(precision)))


def curve_summary(curve: DetectionCurve, rates: Sequence[float] = FP_RATES) -> dict[str, Any]:
    """The summary.json entry of one lesion label (NaN scores when the reference has no lesion)."""
    undefined = curve.lesions == 0
    at = np.full(len(rates), np.nan) if undefined else sensitivity_at(curve.fp_per_case, curve.sensitivity, rates)
    ap = float("nan") if undefined else average_precision(curve.sensitivity, curve.precision)
    reached = float("nan") if undefined else float(curve.sensitivity.max(initial=0.0))
    return {
        "cases": curve.cases,
        "reference_lesions": curve.lesions,
        "predicted_lesions": int(curve.predicted[-1]) if len(curve.predicted) else 0,
        "average_precision": ap,
        "sensitivity_at_fp_per_case": {f"{rate:g}": float(value) for rate, value in zip(rates, at)},
        "cpm": float(np.mean(at)),
        "max_sensitivity": reached,
        "froc": {"thresholds": curve.thresholds.tolist(), "fp_per_case": curve.fp_per_case.tolist(),
                 "sensitivity": curve.sensitivity.tolist(), "precision": curve.precision.tolist()},
    }


# --- files -------------------------------------------------------------------------------------
def lesions_file(prediction: Path, case: str) -> Path:
    """``<case>_lesions.json`` beside a prediction (what `medseg infer --instances` writes)."""
    from medseg.infer.outputs import LESIONS_SUFFIX

    return prediction.with_name(f"{case}{LESIONS_SUFFIX}.json")


def read_lesions(path: Path) -> tuple[Path, list[dict[str, Any]], str]:
    """(instance map path, lesion records, confidence source) of a ``<case>_lesions.json``."""
    try:
        document = json.loads(path.read_text())
        records = list(document["lesions"])
        instance_map = path.with_name(str(document["instance_map"]))
        source = str((document.get("confidence") or {}).get("source", "unknown"))
        for record in records:
            float(record["confidence"]), int(record["id"]), int(record["label_index"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(path, f"is not a `medseg infer --instances` lesions file ({type(error).__name__}: {error})") from error
    return instance_map, records, source


def confidences_for(records: list[dict[str, Any]], spec: LabelSpec) -> dict[int, float]:
    """{instance id: confidence} of the records of the evaluated label: those with its name (regions: a BraTS
    'whole tumor' instance is named so), else, for a one-value label, those with its value."""
    def belongs(record: dict[str, Any]) -> bool:
        if str(record.get("label", "")).lower() == spec.name.lower():
            return True
        return len(spec.values) == 1 and int(record["label_index"]) == spec.values[0]

    return {int(r["id"]): float(r["confidence"]) for r in records if belongs(r)}


def detection_rows(case: CaseDetections, label: str, config: EvaluateConfig) -> list[dict[str, Any]]:
    """detections.csv rows: each predicted lesion, whether it is matched with every prediction kept, and its hits."""
    ref = [replace(lesion, hits=[], detected=False, dice=np.nan) for lesion in case.ref]
    pred = [replace(c, hits=[], detected=False) for c in case.pred]
    assign_matches(ref, pred, case.overlap, case.hits, config)
    return [{"case": case.case, "label": label, "lesion": c.id, "confidence": case.confidence[c.id], "voxels": c.voxels,
             "matched": c.detected, "hits": ";".join(str(h) for h in c.hits)} for c in pred]
