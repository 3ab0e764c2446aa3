"""FROC, CPM and average precision over lesions: exact values on crafted candidates, masks and files."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medseg.errors import InputError
from medseg.metrics import evaluate
from medseg.metrics.config import EvaluateConfig
from medseg.metrics.detection import (
    CaseDetections,
    average_precision,
    case_detections,
    curve_summary,
    detection_curve,
    froc_points,
    sensitivity_at,
)
from medseg.metrics.lesions import Component

CONFIG = EvaluateConfig()


def _worked_example() -> list[CaseDetections]:
    """Case 1: lesion A; predictions 0.9 on A, 0.8 nowhere, 0.4 on A again (a duplicate).
    Case 2: lesions B and C; predictions 0.7 on B, 0.6 and 0.5 nowhere, 0.3 on C."""
    one = CaseDetections("one", [Component(1, 10, ())], [Component(i, 4, ()) for i in (1, 2, 6)], {1: 0.9, 2: 0.8, 6: 0.4},
                         overlap={(1, 1): 4, (1, 6): 2}, hits={(1, 1): 4, (1, 6): 2})
    two = CaseDetections("two", [Component(1, 10, ()), Component(2, 10, ())], [Component(i, 4, ()) for i in (3, 4, 5, 7)],
                         {3: 0.7, 4: 0.6, 5: 0.5, 7: 0.3}, overlap={(1, 3): 4, (2, 7): 1}, hits={(1, 3): 4, (2, 7): 1})
    return [one, two]


def test_curve_of_the_worked_example():
    curve = detection_curve(_worked_example(), CONFIG)
    assert curve.thresholds.tolist() == [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]
    assert curve.detected.tolist() == [1, 1, 2, 2, 2, 2, 3]
    assert curve.predicted.tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert curve.false_positives.tolist() == [0, 1, 1, 2, 3, 3, 3]  # the duplicate at 0.4 is matched, not an FP
    assert curve.fp_per_case.tolist() == [0, 0.5, 0.5, 1, 1.5, 1.5, 1.5]
    assert (curve.lesions, curve.cases) == (3, 2)


def test_froc_sensitivities_cpm_and_ap_of_the_worked_example():
    summary = curve_summary(detection_curve(_worked_example(), CONFIG))
    at = summary["sensitivity_at_fp_per_case"]
    expected = {"0.125": 1 / 3 + 0.25 / 3, "0.25": 0.5, "0.5": 2 / 3, "1": 2 / 3, "2": 1.0, "4": 1.0, "8": 1.0}
    assert at == pytest.approx(expected)
    assert summary["cpm"] == pytest.approx(0.75)
    assert summary["average_precision"] == pytest.approx((1 + 2 / 3 + 4 / 7) / 3)  # recall steps of 1/3 at precisions 1, 2/3, 4/7
    assert summary["max_sensitivity"] == 1.0 and summary["predicted_lesions"] == 7


def test_froc_vertices_interpolation_and_edge_cases():
    x, y = froc_points(np.array([0.5, 0.5, 1.0]), np.array([0.25, 0.5, 0.5]))
    assert x.tolist() == [0.0, 0.5, 1.0] and y.tolist() == [0.0, 0.5, 0.5]  # (0, 0) first; best sensitivity per FP rate
    assert sensitivity_at(np.array([0.5]), np.array([1.0]), [0.125, 0.25, 2]).tolist() == [0.25, 0.5, 1.0]
    assert sensitivity_at(np.array([]), np.array([]), [1.0]).tolist() == [0.0]  # nothing predicted
    assert np.isnan(sensitivity_at(np.array([1.0]), np.array([np.nan]), [1.0])).all()  # no reference lesion
    assert average_precision(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(0.75)
    assert average_precision(np.array([]), np.array([])) == 0.0


def test_no_lesion_and_no_prediction_give_undefined_and_zero_scores():
    empty_ref = CaseDetections("a", [], [Component(1, 3, ())], {1: 0.5})
    summary = curve_summary(detection_curve([empty_ref], CONFIG))
    assert np.isnan(summary["average_precision"]) and np.isnan(summary["cpm"])
    missed = CaseDetections("b", [Component(1, 3, ())], [], {})
    summary = curve_summary(detection_curve([missed], CONFIG))
    assert summary["average_precision"] == 0.0 and summary["cpm"] == 0.0 and summary["max_sensitivity"] == 0.0


def test_case_detections_from_masks_use_the_lesion_rule():
    ref = np.zeros((20, 20, 20), bool)
    ref[2:6, 2:6, 2:6] = True  # A
    ref[12:16, 12:16, 12:16] = True  # B
    instances = np.zeros(ref.shape, np.uint16)
    instances[3:5, 3:5, 3:5] = 1  # inside A
    instances[10:12, 12:14, 12:14] = 2  # one voxel short of B: a hit only with dilation
    instances[18, 18, 18] = 3  # a speck (below lesion_min_voxels=2)
    instances[0:2, 18:20, 0:2] = 4  # another label's instance: not passed in
    confidences = {1: 0.9, 2: 0.8, 3: 0.7}
    plain = detection_curve([case_detections("c", ref, instances, confidences, EvaluateConfig(lesion_min_voxels=2))], CONFIG)
    assert plain.detected.tolist() == [1, 1] and plain.false_positives.tolist() == [0, 1]
    dilated = EvaluateConfig(lesion_min_voxels=2, lesion_match_dilation_voxels=1)
    curve = detection_curve([case_detections("c", ref, instances, confidences, dilated)], dilated)
    assert curve.detected.tolist() == [1, 2] and curve.false_positives.tolist() == [0, 0]


# --- end to end through `evaluate` ---------------------------------------------------------------
AFFINE = np.diag([-0.8, -0.8, 2.5, 1.0])  # LPS-like, anisotropic


def _save(array: np.ndarray, path) -> None:
    image = nib.Nifti1Image(array, AFFINE)
    image.set_sform(AFFINE, code=1)
    image.set_qform(AFFINE, code=1)
    nib.save(image, str(path))


def _write_case(pred_dir, gt_dir, name: str, ref: np.ndarray, instances: np.ndarray, confidences: dict[int, float]) -> None:
    mask = np.where(instances > 0, 2, 0).astype(np.uint8)
    _save(ref.astype(np.uint8), gt_dir / f"{name}.nii.gz")
    _save(mask, pred_dir / f"{name}.nii.gz")
    _save(instances.astype(np.uint16), pred_dir / f"{name}_instances.nii.gz")
    lesions = [{"id": i, "label": "tumor", "label_index": 2, "confidence": c} for i, c in confidences.items()]
    (pred_dir / f"{name}_lesions.json").write_text(json.dumps({"instance_map": f"{name}_instances.nii.gz", "lesions": lesions,
                                                               "confidence": {"source": "objectness"}}))


@pytest.fixture
def folders(tmp_path):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    shape = (24, 24, 10)
    ref, instances = np.zeros(shape, np.uint8), np.zeros(shape, np.uint16)
    ref[2:6, 2:6, 2:4] = 2  # lesion A
    instances[3:5, 3:5, 2:4] = 1  # 0.9 on A
    instances[15:18, 15:18, 5:7] = 2  # 0.8 FP
    _write_case(pred_dir, gt_dir, "one", ref, instances, {1: 0.9, 2: 0.8})
    ref, instances = np.zeros(shape, np.uint8), np.zeros(shape, np.uint16)
    ref[2:6, 2:6, 2:4] = 2  # lesion B
    ref[12:16, 12:16, 6:8] = 2  # lesion C, never predicted
    instances[2:4, 2:4, 2:3] = 1  # 0.7 on B
    instances[20:23, 2:5, 8:10] = 2  # 0.6 FP
    _write_case(pred_dir, gt_dir, "two", ref, instances, {1: 0.7, 2: 0.6})
    return pred_dir, gt_dir


def test_evaluate_reports_froc_and_ap_from_lesion_files(folders, tmp_path):
    pred_dir, gt_dir = folders
    result = evaluate(pred_dir, gt_dir, labels={"tumor": 2}, lesion_labels=["tumor"], out_dir=tmp_path / "eval", progress=False)
    assert result.summary["case_ids"] == ["one", "two"]  # the instance maps are not cases
    tumour = result.summary["lesion_detection"]["labels"]["tumor"]
    # thresholds 0.9, 0.8, 0.7, 0.6: detected 1, 1, 2, 2 of 3; FPs 0, 1, 1, 2 over 2 cases
    assert tumour["froc"]["sensitivity"] == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3])
    assert tumour["froc"]["fp_per_case"] == [0.0, 0.5, 0.5, 1.0]
    assert tumour["average_precision"] == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3)
    assert tumour["sensitivity_at_fp_per_case"]["0.25"] == pytest.approx(0.5)
    assert tumour["sensitivity_at_fp_per_case"]["8"] == pytest.approx(2 / 3)
    assert result.summary["lesion_detection"]["confidence_source"] == ["objectness"]
    names = {path.name for path in result.files}
    assert {"detections.csv", "froc.png", "summary.json"} <= names
    rows = (tmp_path / "eval" / "detections.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("case,label,lesion,confidence")


def test_detection_setting_on_off_and_incomplete_folders(folders, tmp_path):
    pred_dir, gt_dir = folders
    off = evaluate(pred_dir, gt_dir, labels={"tumor": 2}, lesion_labels=["tumor"], config=EvaluateConfig(detection="off"), progress=False)
    assert "lesion_detection" not in off.summary
    (pred_dir / "two_lesions.json").unlink()
    partial = evaluate(pred_dir, gt_dir, labels={"tumor": 2}, lesion_labels=["tumor"], progress=False)
    assert "lesion_detection" not in partial.summary  # auto: not every case has confidences, so no FROC
    with pytest.raises(InputError, match="lesions.json"):
        evaluate(pred_dir, gt_dir, labels={"tumor": 2}, lesion_labels=["tumor"], config=EvaluateConfig(detection="on"), progress=False)
