"""Lesion matching (split, merged, missed, false positive) and RECIST diameters."""

import numpy as np
import pytest

from medseg.io.volume import Volume
from medseg.metrics.aggregate import lesion_summary
from medseg.metrics.case import evaluate_case
from medseg.metrics.config import EvaluateConfig
from medseg.metrics.diameters import axial_diameters
from medseg.metrics.labels import LabelSpec
from medseg.metrics.lesions import components, match_lesions


def _scene():
    """Reference: A (8^3), B and C (5x6x6, close together), D (1 voxel). Prediction: A split in
    two, one component covering B and C, D missed, one false positive E."""
    ref = np.zeros((40, 40, 40), bool)
    pred = np.zeros_like(ref)
    ref[2:10, 2:10, 2:10] = True  # A
    pred[2:5, 2:10, 2:10] = True  # A, first half
    pred[7:10, 2:10, 2:10] = True  # A, second half
    ref[15:20, 2:8, 2:8] = True  # B
    ref[22:27, 2:8, 2:8] = True  # C
    pred[15:27, 2:8, 2:8] = True  # one component over B and C
    ref[30, 30, 30] = True  # D: small, missed
    pred[30:35, 10:15, 30:35] = True  # E: false positive
    return ref, pred


def test_split_merged_missed_and_false_positive():
    ref, pred = _scene()
    match = match_lesions(ref, pred, EvaluateConfig())
    lesions = {lesion.id: lesion for lesion in match.ref}
    assert len(match.ref) == 4 and len(match.pred) == 4
    a, b, c, d = (lesions[i] for i in (1, 2, 3, 4))
    assert a.detected and len(a.hits) == 2  # split: one TP, both halves matched
    assert b.detected and c.detected and b.hits == c.hits  # merged: both TP, same component
    assert not d.detected and d.dice == 0.0  # missed
    assert a.dice == pytest.approx(2 * 384 / (512 + 384))
    assert b.dice == pytest.approx(2 * 180 / (180 + 432))  # the merged component has 12x6x6 voxels
    false_positives = [component for component in match.pred if not component.detected]
    assert len(false_positives) == 1 and false_positives[0].voxels == 125
    scores = match.scores
    assert (scores["lesion_tp"], scores["lesion_fn"], scores["lesion_fp"]) == (3, 1, 1)
    assert scores["lesion_sensitivity"] == 0.75
    assert scores["lesion_precision"] == 0.75  # 3 of 4 predicted components are matched
    assert scores["lesion_f1"] == pytest.approx(0.75)
    # BraTS 2023: sum of detected lesions' Dice over (reference lesions + false positives)
    assert scores["lesion_dice"] == pytest.approx((a.dice + b.dice + c.dice) / 5)


def test_iou_threshold_turns_weak_hits_into_misses():
    ref, pred = _scene()
    match = match_lesions(ref, pred, EvaluateConfig(lesion_iou_threshold=0.6))
    detected = {lesion.id: lesion.detected for lesion in match.ref}
    assert detected == {1: True, 2: False, 3: False, 4: False}  # B, C: IoU 180/432 with the merged one
    assert match.scores["lesion_fp"] == 2  # the merged component no longer matches anything


def test_dilation_and_min_size():
    ref = np.zeros((20, 20, 20), bool)
    pred = np.zeros_like(ref)
    ref[5:9, 5:9, 5:9] = True
    pred[10:13, 5:9, 5:9] = True  # one empty voxel plane away: no overlap
    assert match_lesions(ref, pred, EvaluateConfig()).scores["lesion_tp"] == 0
    assert match_lesions(ref, pred, EvaluateConfig(lesion_match_dilation_voxels=2)).scores["lesion_tp"] == 1
    ref[15, 15, 15] = True
    labelled, found = components(ref, 26, min_voxels=2)
    assert len(found) == 1 and labelled.max() == 1


def test_connectivity():
    mask = np.zeros((5, 5, 5), bool)
    mask[1, 1, 1] = mask[2, 2, 2] = True  # corner neighbours
    assert len(components(mask, 26)[1]) == 1
    assert len(components(mask, 6)[1]) == 2


def test_empty_maps_give_no_lesions():
    empty = np.zeros((6, 6, 6), bool)
    scores = match_lesions(empty, empty, EvaluateConfig()).scores
    assert scores["lesions_ref"] == 0 and np.isnan(scores["lesion_sensitivity"]) and scores["lesion_dice"] == 1.0


def test_rectangle_diameters_exact():
    spacing = (0.7, 1.3, 2.0)
    mask = np.zeros((30, 30, 5), bool)
    mask[5:15, 10:14, 2] = True  # 7.0 x 5.2 mm
    mask[6:9, 10:12, 3] = True  # a smaller section on the next slice
    result = axial_diameters(mask, np.diag([*spacing, 1.0]))
    width, height = 10 * 0.7, 4 * 1.3
    diagonal = np.hypot(width, height)
    assert result["axial_slice"] == 2
    assert result["long_axis_mm"] == pytest.approx(diagonal)  # edge to edge: the diagonal
    # longest chord perpendicular to the diagonal of a width x height rectangle (width > height)
    assert result["short_axis_mm"] == pytest.approx(height * diagonal / width)


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0])
def test_ellipse_diameters_within_a_pixel(angle):
    pixel = 0.5
    a, b = 20.0, 8.0  # semi-axes, mm
    i, j = np.mgrid[0:120, 0:120]
    x, y = (i - 60) * pixel, (j - 60) * pixel
    theta = np.deg2rad(angle)
    u, v = x * np.cos(theta) + y * np.sin(theta), -x * np.sin(theta) + y * np.cos(theta)
    mask = np.zeros((120, 120, 3), bool)
    mask[:, :, 1] = (u / a) ** 2 + (v / b) ** 2 <= 1
    result = axial_diameters(mask, np.diag([pixel, pixel, 3.0, 1.0]))
    assert abs(result["long_axis_mm"] - 2 * a) <= 2 * pixel
    assert abs(result["short_axis_mm"] - 2 * b) <= 2 * pixel


def test_diameters_are_axial_in_world_space():
    """A lesion stored in a sagittal (PSR-like) array is measured in its world-axial plane."""
    ras = np.zeros((20, 20, 20), np.uint8)
    ras[5:15, 8:12, 9:11] = 1  # 10 voxels along R-L, 4 along A-P, 2 slices along S-I
    spacing = (1.0, 1.0, 1.0)
    ref_vol = Volume(ras, np.diag([*spacing, 1.0]), "label")
    # Store the same voxels with the array axes permuted: array axis 0 = S, 1 = A, 2 = R.
    permuted_affine = np.zeros((4, 4))
    permuted_affine[2, 0] = permuted_affine[1, 1] = permuted_affine[0, 2] = 1.0
    permuted_affine[3, 3] = 1.0
    stored = Volume(np.ascontiguousarray(ras.transpose(2, 1, 0)), permuted_affine, "label")
    assert stored.orientation != "RAS"
    config = EvaluateConfig(lesion_labels=["1"])
    spec = [LabelSpec("tumor", (1,))]
    _, rows_ras = evaluate_case(ref_vol, ref_vol, spec, config, lesion_specs=spec)
    _, rows_stored = evaluate_case(stored, stored, spec, config, lesion_specs=spec)
    expected = np.hypot(10, 4)
    for rows in (rows_ras, rows_stored):
        assert rows[0]["long_axis_mm"] == pytest.approx(expected)
        assert rows[0]["short_axis_mm"] == pytest.approx(4 * expected / 10)


def test_lesion_rows_and_size_bins():
    ref, pred = _scene()
    spec = [LabelSpec("tumor", (1,))]
    config = EvaluateConfig(lesion_labels=["tumor"], lesion_size_bins_ml=[0.01, 0.3])
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    rows, lesion_rows = evaluate_case(Volume(pred.astype(np.uint8), affine, "label"), Volume(ref.astype(np.uint8), affine, "label"), spec, config, "c1", spec)
    assert rows[0]["lesion_tp"] == 3 and rows[0]["lesion_fp"] == 1
    refs = [row for row in lesion_rows if row["source"] == "ref"]
    assert len(refs) == 4 and len(lesion_rows) == 8
    bins = {row["voxels"]: row["size_bin"] for row in refs}
    assert bins[1] == "<0.01 mL" and bins[180] == "0.01-0.3 mL" and bins[512] == ">=0.3 mL"
    summary = lesion_summary(rows, lesion_rows, config)["tumor"]
    assert summary["sensitivity"] == 0.75 and summary["fp_per_case"] == 1.0
    assert summary["sensitivity_by_size"]["<0.01 mL"] == {"lesions": 1, "detected": 0, "sensitivity": 0.0}
    assert summary["sensitivity_by_size"]["0.01-0.3 mL"]["sensitivity"] == 1.0
