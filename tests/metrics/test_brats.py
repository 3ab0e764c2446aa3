"""BraTS 2023 lesion-wise Dice/HD95 on hand-built scenes whose scores are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.metrics.brats import brats_lesionwise

SHAPE = (40, 40, 40)
SPACING = (1.0, 1.0, 1.0)


def cube(mask: np.ndarray, corner, size=4) -> np.ndarray:
    x, y, z = corner
    mask[x : x + size, y : y + size, z : z + size] = True
    return mask


def empty() -> np.ndarray:
    return np.zeros(SHAPE, bool)


def test_two_lesions_one_detected_one_missed():
    ref = cube(cube(empty(), (2, 2, 2)), (25, 25, 25))  # two 64-voxel lesions (> 50 mm^3), far apart
    pred = cube(empty(), (2, 2, 2))  # the first exactly
    result = brats_lesionwise(pred, ref, SPACING)
    assert (result.tp, result.fn, result.fp) == (1, 1, 0)
    assert [lesion.dice for lesion in result.lesions] == [1.0, 0.0]
    assert result.dice == pytest.approx((1.0 + 0.0) / 2)
    assert result.hd95 == pytest.approx((0.0 + 374.0) / 2)


def test_false_positive_counts_dice_zero_and_374():
    ref = cube(empty(), (2, 2, 2))
    pred = cube(cube(empty(), (2, 2, 2)), (25, 25, 25))
    result = brats_lesionwise(pred, ref, SPACING)
    assert (result.tp, result.fn, result.fp) == (1, 0, 1) and result.false_positives == [(2, 64)]
    assert result.dice == pytest.approx(1 / 2) and result.hd95 == pytest.approx(374 / 2)


def test_split_prediction_is_merged_into_one_match():
    ref = cube(empty(), (10, 10, 10), size=6)  # 216 voxels
    pred = ref.copy()
    pred[13] = False  # a plane removed: two components of 3x6x6 and 2x6x6
    result = brats_lesionwise(pred, ref, SPACING)
    assert result.components == 2 and result.fp == 0 and result.tp == 1
    assert result.lesions[0].matched == [1, 2]
    assert result.dice == pytest.approx(2 * 180 / (180 + 216))
    assert 0 < result.hd95 <= 1.0 + 1e-9  # the removed plane is one voxel from the reference surface


def test_empty_reference_with_a_false_positive():
    result = brats_lesionwise(cube(empty(), (5, 5, 5)), empty(), SPACING)
    assert (result.tp, result.fn, result.fp) == (0, 0, 1)
    assert result.dice == 0.0 and result.hd95 == 374.0


def test_both_empty():
    result = brats_lesionwise(empty(), empty(), SPACING)
    assert (result.dice, result.hd95, result.tp, result.fn, result.fp) == (1.0, 0.0, 0, 0, 0)


def test_small_lesions_are_not_scored_and_their_matches_are_not_false_positives():
    ref = cube(cube(empty(), (2, 2, 2), size=3), (25, 25, 25), size=3)  # 27 voxels each: <= 50 mm^3
    pred = cube(empty(), (2, 2, 2), size=3)  # matches the first small lesion
    result = brats_lesionwise(pred, ref, SPACING)
    assert [lesion.counted for lesion in result.lesions] == [False, False]
    assert (result.tp, result.fn, result.fp) == (0, 0, 0)
    assert (result.dice, result.hd95) == (1.0, 0.0)  # nothing to score
    scaled = brats_lesionwise(pred, ref, (2.0, 1.0, 1.0))  # 54 mm^3 each now: counted
    assert (scaled.tp, scaled.fn) == (1, 1) and scaled.dice == pytest.approx(0.5)


def test_reference_components_within_the_dilation_are_one_lesion():
    ref = cube(cube(empty(), (2, 2, 2)), (8, 2, 2))  # gap of 2 voxels (x = 6, 7): joined by 3 dilations
    pred = cube(empty(), (2, 2, 2))  # only the first part
    result = brats_lesionwise(pred, ref, SPACING)
    assert len(result.lesions) == 1 and result.lesions[0].voxels == 128
    assert result.dice == pytest.approx(2 * 64 / (64 + 128))
    apart = brats_lesionwise(pred, ref, SPACING, dilation=0)  # no dilation: two lesions, one missed
    assert len(apart.lesions) == 2 and (apart.tp, apart.fn) == (1, 1)


def test_one_component_over_two_lesions_counts_for_both():
    ref = cube(cube(empty(), (2, 2, 2)), (16, 2, 2))  # 10 voxels apart: two lesions
    pred = ref.copy()
    pred[6:16, 3, 3] = True  # a 10-voxel bridge: one component of 138 voxels
    result = brats_lesionwise(pred, ref, SPACING)
    assert result.components == 1 and (result.tp, result.fp) == (2, 0)
    assert [lesion.matched for lesion in result.lesions] == [[1], [1]]
    assert result.dice == pytest.approx(2 * 64 / (64 + 138))


def test_near_miss_within_the_dilation_matches_with_dice_zero():
    ref = cube(empty(), (10, 10, 10))  # x 10..13
    pred = cube(empty(), (16, 10, 10))  # x 16..19: 2 voxels of gap, within 3 dilations
    result = brats_lesionwise(pred, ref, SPACING)
    assert (result.tp, result.fp) == (1, 0)
    assert result.dice == 0.0
    # surface voxels of either cube sit 3, 4, 5 or 6 mm from the other's (16, 12, 12, 16 of them): the 95th percentile is 6
    assert result.hd95 == pytest.approx(6.0)
    far = brats_lesionwise(cube(empty(), (20, 10, 10)), ref, SPACING)  # 6 voxels of gap: a miss and a false positive
    assert (far.tp, far.fn, far.fp) == (0, 1, 1) and far.dice == 0.0 and far.hd95 == 374.0


# --- through medseg evaluate ----------------------------------------------------------------------
REGIONS = {"background": 0, "whole tumor": [1, 2, 3, 4], "tumor core": [1, 3, 4], "enhancing tumor": [4]}


def _label_maps():
    """Reference: oedema shell (2) around a core of necrosis (1) and enhancing (4); a second small-ish
    enhancing lesion far away. Prediction: the first tumour exactly, the second missed, one FP oedema blob."""
    ref = np.zeros(SHAPE, np.uint8)
    ref[4:16, 4:16, 4:16] = 2
    ref[7:13, 7:13, 7:13] = 1
    ref[9:11, 9:11, 9:11] = 4  # 8 voxels: below 50 mm^3 for ET
    ref[25:30, 25:30, 25:30] = 4  # 125 voxels, its own lesion in every region
    pred = ref.copy()
    pred[25:30, 25:30, 25:30] = 0
    pred[30:36, 2:8, 30:36] = 2  # false positive (whole tumour only)
    return pred, ref


def test_evaluate_scores_regions_and_brats_lesions(tmp_path):
    from medseg.io.volume import Volume
    from medseg.metrics.evaluate import evaluate
    from medseg.metrics.outputs import read_csv

    pred, ref = _label_maps()
    affine = np.eye(4)
    from medseg.metrics.config import EvaluateConfig

    result = evaluate(Volume(pred, affine, "label"), Volume(ref, affine, "label"), labels=REGIONS, out_dir=tmp_path,
                      config=EvaluateConfig(brats_labels=["all"], bootstrap_samples=0), progress=False)
    rows = {row["label"]: row for row in result.cases}
    assert set(rows) == {"whole tumor", "tumor core", "enhancing tumor"}
    whole, core, enhancing = rows["whole tumor"], rows["tumor core"], rows["enhancing tumor"]
    # whole tumour: lesion 1 exact (Dice 1), lesion 2 missed, one FP -> (1 + 0 + 0) / 3
    assert (whole["brats_tp"], whole["brats_fn"], whole["brats_fp"]) == (1, 1, 1)
    assert whole["brats_lesion_dice"] == pytest.approx(1 / 3) and whole["brats_lesion_hd95"] == pytest.approx(2 * 374 / 3)
    # tumour core: the FP is oedema (not core): (1 + 0) / 2
    assert (core["brats_tp"], core["brats_fn"], core["brats_fp"]) == (1, 1, 0) and core["brats_lesion_dice"] == pytest.approx(0.5)
    # enhancing: the 8-voxel lesion is matched but not scored; the missed 125-voxel one is: 0 / 1
    assert (enhancing["brats_tp"], enhancing["brats_fn"], enhancing["brats_fp"]) == (0, 1, 0) and enhancing["brats_lesion_dice"] == 0.0
    # region Dice from the label maps: whole tumour misses 125 voxels and adds 216
    assert whole["dice"] == pytest.approx(2 * 1728 / (1728 + 216 + 1728 + 125))
    summary = result.summary["brats_lesionwise"]
    assert summary["whole tumor"]["lesionwise_dice"] == pytest.approx(1 / 3) and summary["enhancing tumor"]["fn"] == 1
    lesions = read_csv(tmp_path / "brats_lesions.csv")
    kinds = [(row["label"], row["kind"], row["counted"]) for row in lesions]
    assert kinds.count(("whole tumor", "false positive", "true")) == 1
    assert ("enhancing tumor", "reference", "false") in kinds
    assert {"brats_lesion_dice", "brats_tp"} <= set(read_csv(tmp_path / "cases.csv")[0])


def test_evaluate_ignores_the_ignore_label(tmp_path):
    from medseg.io.volume import Volume
    from medseg.metrics.evaluate import evaluate

    ref = np.zeros((10, 10, 10), np.uint8)
    ref[2:6, 2:6, 2:6] = 1
    ref[7:10] = 3  # unannotated
    pred = ref.copy()
    pred[7:10] = 1  # predictions in unannotated voxels do not count
    labels = {"background": 0, "tumor": 1, "other": 2, "ignore": 3}
    result = evaluate(Volume(pred, np.eye(4), "label"), Volume(ref, np.eye(4), "label"), labels=labels, progress=False)
    rows = {row["label"]: row for row in result.cases}
    assert set(rows) == {"tumor", "other"} and rows["tumor"]["dice"] == 1.0
    assert result.summary["ignore_label"] == 3


def test_cli_brats_flag(tmp_path):
    import json

    from medseg.cli.main import main
    from medseg.io import Volume, write_volume

    pred, ref = _label_maps()
    for folder, array in (("pred", pred), ("gt", ref)):
        (tmp_path / folder).mkdir()
        write_volume(Volume(array, np.eye(4), "label"), tmp_path / folder / "case1.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "FLAIR"}, "labels": REGIONS, "regions_class_order": [2, 1, 4]}))
    with pytest.raises(SystemExit) as stop:
        main(["evaluate", "-p", str(tmp_path / "pred"), "-g", str(tmp_path / "gt"), "-l", str(tmp_path / "dataset.json"), "--brats",
              "-o", str(tmp_path / "eval"), "--set", "evaluate.bootstrap_samples=0"])
    assert stop.value.code in (0, None)
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["brats_lesionwise"]["tumor core"]["lesionwise_dice"] == pytest.approx(0.5)
    assert (tmp_path / "eval" / "brats_lesions.csv").is_file()
