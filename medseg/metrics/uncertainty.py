"""How well an uncertainty map ranks wrong voxels: AUROC of uncertainty against error (pred != ref).

AUROC = P(u_wrong > u_right) + 1/2 P(u_wrong = u_right), the Mann-Whitney statistic with ties
counted one half. :func:`rank_auroc` computes it exactly by sorting one group and binary-searching
the other in chunks: O(n log n) time, memory one sorted float copy of the smaller group plus fixed
size chunks (no ranks of all voxels, no pairwise comparisons), so a 512x512x300 CT (79M voxels)
is fine. 1.0: every wrong voxel is more uncertain than every right one; 0.5: no better than chance.

Over a set of cases (:class:`ErrorRanking`) the voxels are pooled. That can exceed memory for big
volumes, so ``max_voxels_per_class`` keeps at most that many wrong and that many right voxels per
case, drawn uniformly without replacement by a generator seeded from ``seed`` and the case's
order (deterministic), and weights each kept voxel by how many it stands for. Uniform sampling
within each class leaves the AUROC unbiased (it depends only on the two classes' score
distributions); the weights keep a big case's share of the pool what it was. Without the cap the
result is exact.

Over all voxels the easy background (certain and right) dominates and pushes the AUROC towards 1;
pass ``within`` (e.g. :func:`near_structures`) to score the voxels where mistakes can happen.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.errors import InputError
from medseg.infer.outputs import ENTROPY_SUFFIX, MUTUAL_INFORMATION_SUFFIX

log = logging.getLogger(__name__)

CHUNK = 1 << 22  # searched values per step


def _check_scores(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values).ravel()
    if values.size and not np.isfinite(values).all():
        raise ValueError("uncertainty scores must be finite (found NaN or inf)")
    return values


def rank_auroc(positive: np.ndarray, negative: np.ndarray, positive_weights: np.ndarray | None = None,
               negative_weights: np.ndarray | None = None) -> float:
    """Exact AUROC of scores ``positive`` (errors) against ``negative`` (correct voxels), ties counting 1/2;
    NaN when either group is empty. Optional per-value weights (sampling weights of subsampled voxels)."""
    positive, negative = _check_scores(positive), _check_scores(negative)
    if positive.size == 0 or negative.size == 0:
        return math.nan
    weighted = positive_weights is not None or negative_weights is not None
    if not weighted and positive.size < negative.size:  # sort the smaller group: P(pos > neg) = 1 - P(neg > pos)
        return 1.0 - rank_auroc(negative, positive)
    if weighted:
        order = np.argsort(negative, kind="stable")
        sorted_negative = negative[order]
        weights = np.ones(negative.size) if negative_weights is None else np.asarray(negative_weights, dtype=np.float64).ravel()[order]
        cumulative = np.concatenate([[0.0], np.cumsum(weights)])
    else:
        sorted_negative = np.sort(negative)
    below_twice = 0  # unweighted: exact integer sum of 2 x (#below + #equal / 2)
    weighted_sum = 0.0
    for start in range(0, positive.size, CHUNK):
        chunk = positive[start : start + CHUNK]
        left = np.searchsorted(sorted_negative, chunk, side="left")
        right = np.searchsorted(sorted_negative, chunk, side="right")
        if weighted:
            own = np.ones(chunk.size) if positive_weights is None else np.asarray(positive_weights, dtype=np.float64).ravel()[start : start + CHUNK]
            weighted_sum += float(np.dot(own, 0.5 * (cumulative[left] + cumulative[right])))
        else:
            below_twice += int(left.sum(dtype=np.int64)) + int(right.sum(dtype=np.int64))
    if weighted:
        total_positive = positive.size if positive_weights is None else float(np.sum(positive_weights, dtype=np.float64))
        return weighted_sum / (total_positive * float(cumulative[-1]))
    return below_twice / (2.0 * positive.size * negative.size)


def near_structures(pred: np.ndarray, ref: np.ndarray, margin_voxels: int = 3) -> np.ndarray:
    """Voxels within ``margin_voxels`` (26-neighbourhood steps) of a foreground voxel of either map."""
    foreground = (np.asarray(pred) > 0) | (np.asarray(ref) > 0)
    if margin_voxels <= 0 or not foreground.any():
        return foreground
    return ndimage.binary_dilation(foreground, np.ones((3, 3, 3), bool), iterations=margin_voxels)


def _scored(uncertainty: np.ndarray, pred: np.ndarray, ref: np.ndarray, within: np.ndarray | None,
            ignore_label: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(scores of wrong voxels, scores of right voxels) over ``within`` minus the ignore label."""
    uncertainty, pred, ref = np.asarray(uncertainty), np.asarray(pred), np.asarray(ref)
    if not uncertainty.shape == pred.shape == ref.shape:
        raise ValueError(f"uncertainty {uncertainty.shape}, prediction {pred.shape} and reference {ref.shape} must share one grid")
    keep = np.ones(ref.shape, bool) if within is None else np.asarray(within, bool)
    if ignore_label is not None:
        keep = keep & (ref != ignore_label)
    wrong = pred != ref
    return uncertainty[keep & wrong], uncertainty[keep & ~wrong]


def error_auroc(uncertainty: np.ndarray, pred: np.ndarray, ref: np.ndarray, *, within: np.ndarray | None = None,
                ignore_label: int | None = None) -> float:
    """Exact AUROC of ``uncertainty`` for the wrong voxels (``pred != ref``) of one case; NaN without errors
    (or without right voxels). ``within``: only these voxels count; ``ignore_label``: reference voxels not scored."""
    wrong, right = _scored(uncertainty, pred, ref, within, ignore_label)
    return rank_auroc(wrong, right)


@dataclass
class ErrorRanking:
    """Pools cases for one AUROC over a set (e.g. a fold's test cases); also keeps each case's own exact AUROC.

    ``max_voxels_per_class``: per case, keep at most this many wrong and this many right voxels
    (deterministic weighted subsample, see the module docstring); None = every voxel, exact.
    """

    max_voxels_per_class: int | None = None
    seed: int = 0
    per_case: dict[str, float] = field(default_factory=dict)
    _scores: list[tuple[np.ndarray, np.ndarray, bool]] = field(default_factory=list, repr=False)  # (values, weights, wrong)

    def add(self, uncertainty: np.ndarray, pred: np.ndarray, ref: np.ndarray, *, case: str | None = None,
            within: np.ndarray | None = None, ignore_label: int | None = None) -> float:
        """Score one case; returns its exact AUROC (NaN when it has no errors or no right voxels)."""
        wrong, right = _scored(uncertainty, pred, ref, within, ignore_label)
        value = rank_auroc(wrong, right)
        index = len(self.per_case)
        self.per_case[case if case is not None else f"case_{index}"] = value
        rng = np.random.default_rng([self.seed, index])
        for values, is_wrong in ((wrong, True), (right, False)):
            kept, weight = values, 1.0
            if self.max_voxels_per_class is not None and values.size > self.max_voxels_per_class:
                kept = values[np.sort(rng.choice(values.size, self.max_voxels_per_class, replace=False))]
                weight = values.size / kept.size
            self._scores.append((kept.astype(np.float32, copy=False), np.full(kept.size, weight, np.float32), is_wrong))
        return value

    def auroc(self) -> float:
        """Pooled AUROC over every case added (exact when nothing was subsampled); NaN without errors."""
        parts = {flag: [(v, w) for v, w, wrong in self._scores if wrong is flag] for flag in (True, False)}
        if not any(v.size for v, _ in parts[True]) or not any(v.size for v, _ in parts[False]):
            return math.nan
        wrong, right = (np.concatenate([v for v, _ in parts[flag]]) for flag in (True, False))
        if all(float(w.max(initial=1.0)) == 1.0 for _, w, _ in self._scores):
            return rank_auroc(wrong, right)
        wrong_w, right_w = (np.concatenate([w for _, w in parts[flag]]) for flag in (True, False))
        return rank_auroc(wrong, right, wrong_w, right_w)

    def summary(self) -> dict[str, object]:
        """{pooled, per-case values, mean of the per-case values (NaN cases left out), settings} for JSON."""
        finite = [value for value in self.per_case.values() if not math.isnan(value)]
        return {
            "pooled_auroc": _rounded(self.auroc()),
            "mean_case_auroc": _rounded(float(np.mean(finite))) if finite else None,
            "cases_without_errors": sum(math.isnan(value) for value in self.per_case.values()),
            "per_case": {name: _rounded(value) for name, value in self.per_case.items()},
            "max_voxels_per_class": self.max_voxels_per_class,
            "seed": self.seed,
        }


def _rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)


def _map_file(maps: Path, case: str, suffix: str) -> Path | None:
    """``<maps>/<case><suffix>.nii.gz`` (or ``.nii``); ``maps`` a file: the entropy map of a single-case evaluation."""
    if not maps.is_dir():
        return maps if suffix == ENTROPY_SUFFIX else None
    for extension in (".nii.gz", ".nii"):
        path = maps / f"{case}{suffix}{extension}"
        if path.is_file():
            return path
    return None


def evaluate_uncertainty(pred: str | Path, gt: str | Path, maps: str | Path, *, ignore_label: int | None = None, margin_voxels: int = 3,
                         max_voxels_per_class: int | None = 2_000_000, seed: int = 0) -> dict[str, Any]:
    """AUROC of every uncertainty map `medseg infer --save-uncertainty` wrote to ``maps`` (``<case>_entropy.nii.gz``,
    ``<case>_mutual_information.nii.gz``) against the errors of ``pred`` (file or folder) vs ``gt``: over all voxels
    and :func:`near_structures`, per case (exact) and pooled (subsampled per ``max_voxels_per_class``)."""
    from medseg.io.readers import read_volume
    from medseg.metrics.evaluate import pair_cases

    pairs, _ = pair_cases(Path(pred), Path(gt), on_missing="skip")
    kinds = {"entropy": ENTROPY_SUFFIX, "mutual_information": MUTUAL_INFORMATION_SUFFIX}
    rankings = {kind: {region: ErrorRanking(max_voxels_per_class, seed) for region in ("all_voxels", "near_structures")} for kind in kinds}
    missing: dict[str, list[str]] = {kind: [] for kind in kinds}
    folder = Path(maps)
    if not folder.exists():
        raise InputError(folder, "uncertainty map folder (or file) does not exist")
    if not folder.is_dir() and len(pairs) != 1:
        raise InputError(folder, f"is one file but {len(pairs)} cases are evaluated; give the folder `medseg infer --save-uncertainty` wrote")
    for case, pred_path, gt_path in pairs:
        prediction, reference = read_volume(pred_path, role="label"), read_volume(gt_path, role="label")
        near = near_structures(prediction.array, reference.array, margin_voxels)
        for kind, suffix in kinds.items():
            path = _map_file(folder, case, suffix)
            if path is None:
                missing[kind].append(case)
                continue
            values = read_volume(path)
            if not values.same_grid(prediction):
                raise InputError(path, f"is not on the grid of the prediction of case {case}")
            for region, within in (("all_voxels", None), ("near_structures", near)):
                rankings[kind][region].add(values.array, prediction.array, reference.array, case=case, within=within, ignore_label=ignore_label)
    result: dict[str, Any] = {kind: {region: ranking.summary() for region, ranking in by_region.items()}
                              for kind, by_region in rankings.items() if len(missing[kind]) < len(pairs)}
    result["missing_maps"] = {kind: cases for kind, cases in missing.items() if cases}
    result["definition"] = ("AUROC of the uncertainty map for the wrong voxels (prediction != reference) against the right ones, ties "
                            f"1/2; near_structures = within {margin_voxels} voxel(s) of either map's foreground; ignore label not scored")
    return result
