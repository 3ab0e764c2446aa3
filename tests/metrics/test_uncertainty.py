"""AUROC of uncertainty for wrong voxels: exact rank statistic, ties, pooling and deterministic subsampling."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from medseg.io import Volume, write_volume
from medseg.metrics.uncertainty import ErrorRanking, error_auroc, evaluate_uncertainty, near_structures, rank_auroc


def _brute_force(positive: np.ndarray, negative: np.ndarray) -> float:
    greater = (positive[:, None] > negative[None, :]).sum()
    equal = (positive[:, None] == negative[None, :]).sum()
    return float((greater + 0.5 * equal) / (positive.size * negative.size))


def test_perfect_inverted_and_random_rankings():
    rng = np.random.default_rng(0)
    error = rng.random((40, 30, 20)) < 0.1
    pred, ref = error.astype(np.uint8), np.zeros(error.shape, np.uint8)  # wrong exactly where error
    perfect = np.where(error, 0.6 + 0.4 * rng.random(error.shape), 0.5 * rng.random(error.shape)).astype(np.float32)
    assert error_auroc(perfect, pred, ref) == 1.0
    assert error_auroc(1.0 - perfect, pred, ref) == 0.0
    assert error_auroc(rng.random(error.shape).astype(np.float32), pred, ref) == pytest.approx(0.5, abs=0.02)
    assert error_auroc(np.zeros(error.shape, np.float32), pred, ref) == 0.5  # all tied: one half
    assert math.isnan(error_auroc(perfect, ref, ref))  # no errors: undefined


@pytest.mark.parametrize("sizes", [(7, 50), (50, 7), (1, 1)])
def test_equals_the_pairwise_definition_with_ties(sizes):
    rng = np.random.default_rng(sum(sizes))
    positive, negative = (rng.integers(0, 6, n).astype(np.float32) for n in sizes)  # many ties
    assert rank_auroc(positive, negative) == pytest.approx(_brute_force(positive, negative), abs=1e-12)
    weights = np.full(sizes[1], 3.0)  # uniform weights change nothing
    assert rank_auroc(positive, negative, None, weights) == pytest.approx(_brute_force(positive, negative), abs=1e-12)


def test_within_and_ignore_label_restrict_the_voxels():
    ref = np.zeros((10, 10, 10), np.uint8)
    ref[2:5] = 1
    pred = ref.copy()
    pred[4] = 0  # wrong slab
    uncertainty = np.zeros(ref.shape, np.float32)
    uncertainty[4] = 0.9
    uncertainty[8] = 1.0  # a certain-looking mistake-free region that outranks the errors...
    assert error_auroc(uncertainty, pred, ref) < 1.0
    within = np.zeros(ref.shape, bool)
    within[:7] = True  # ... left out by the region
    assert error_auroc(uncertainty, pred, ref, within=within) == 1.0
    ref_ignored = ref.copy()
    ref_ignored[8] = 7
    pred[8] = 7  # ignored voxels are not scored at all, right or wrong
    assert error_auroc(uncertainty, pred, ref_ignored, ignore_label=7) == error_auroc(uncertainty, pred, ref, within=within)
    assert near_structures(pred, ref, 1).sum() > ((pred > 0) | (ref > 0)).sum()


def test_pooled_ranking_exact_and_subsampled():
    rng = np.random.default_rng(3)
    cases = []
    for size in (30, 50):
        ref = (rng.random((size, size, 8)) < 0.3).astype(np.uint8)
        pred = np.where(rng.random(ref.shape) < 0.15, 1 - ref, ref)
        uncertainty = ((pred != ref) * 0.3 + rng.random(ref.shape)).astype(np.float32)
        cases.append((uncertainty, pred, ref))
    exact = ErrorRanking()
    for number, case in enumerate(cases):
        exact.add(*case, case=f"c{number}")
    wrong = np.concatenate([u[p != r] for u, p, r in cases])
    right = np.concatenate([u[p == r] for u, p, r in cases])
    assert exact.auroc() == pytest.approx(rank_auroc(wrong, right), abs=1e-12)
    assert set(exact.per_case) == {"c0", "c1"} and 0.6 < exact.per_case["c0"] < 1.0
    sampled = [ErrorRanking(max_voxels_per_class=500, seed=1) for _ in range(2)]
    for ranking in sampled:
        for case in cases:
            ranking.add(*case)
    assert sampled[0].auroc() == sampled[1].auroc()  # deterministic
    assert sampled[0].auroc() == pytest.approx(exact.auroc(), abs=0.03)
    assert list(sampled[0].per_case.values()) == list(exact.per_case.values())  # each case's own AUROC is always exact
    summary = exact.summary()
    assert summary["pooled_auroc"] == pytest.approx(exact.auroc(), abs=1e-6) and summary["cases_without_errors"] == 0
    json.dumps(summary)


def test_evaluate_uncertainty_reads_the_maps_beside_the_predictions(tmp_path):
    rng = np.random.default_rng(5)
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    for case in ("a", "b"):
        ref = np.zeros((20, 20, 10), np.uint8)
        ref[5:15, 5:15, 2:8] = 1
        pred = np.zeros_like(ref)
        pred[6:15, 5:15, 2:8] = 1
        entropy = np.where(pred != ref, 0.8, 0.1 * rng.random(ref.shape)).astype(np.float32)
        affine = np.diag([1.0, 1.0, 3.0, 1.0])
        write_volume(Volume(ref, affine, "label"), tmp_path / "gt" / f"{case}.nii.gz")
        write_volume(Volume(pred, affine, "label"), tmp_path / "pred" / f"{case}.nii.gz")
        write_volume(Volume(entropy, affine), tmp_path / "pred" / f"{case}_entropy.nii.gz")
    scores = evaluate_uncertainty(tmp_path / "pred", tmp_path / "gt", tmp_path / "pred")
    assert scores["entropy"]["all_voxels"]["pooled_auroc"] == 1.0
    assert scores["entropy"]["near_structures"]["per_case"] == {"a": 1.0, "b": 1.0}
    assert "mutual_information" not in scores and scores["missing_maps"] == {"mutual_information": ["a", "b"]}
